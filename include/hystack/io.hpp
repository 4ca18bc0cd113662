#pragma once
/// hystack io module: safetensors reading/writing and HuggingFace Jamba checkpoints.
/// Needs nlohmann_json: link hystack::io (not only hystack::hystack).
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "io/safetensors.hpp"
#include "io/hf_jamba.hpp"
#include "io/jamba_model.hpp"
