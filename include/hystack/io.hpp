#pragma once
/// hystack io module: safetensors reading/writing and HuggingFace Jamba configs (io/, which needs
/// only core/), and load_jamba, which builds a CausalLM from a checkpoint (loaders/, above the model).
/// Needs nlohmann_json: link hystack::io (not only hystack::hystack).
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "io/safetensors.hpp"
#include "io/gguf.hpp"
#include "io/gguf_writer.hpp"
#include "io/hf_jamba.hpp"
#include "io/params.hpp"
#include "loaders/jamba.hpp"
#include "loaders/jamba_gguf.hpp"
