#pragma once
/// hystack io module: safetensors and GGUF reading/writing and HuggingFace Jamba configs (io/, which needs
/// only core/), and the loaders above the model (loaders/): load_jamba (an HF directory), load_jamba_gguf
/// and save_jamba_gguf (llama.cpp's jamba GGUF files).
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
#include "loaders/jamba_gguf_writer.hpp"
