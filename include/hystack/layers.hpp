#pragma once
/// hystack layers module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "kernels.hpp"
#include "layers/norm.hpp"
#include "layers/embedding.hpp"
#include "layers/mamba.hpp"
#include "layers/mlp.hpp"
#include "layers/moe.hpp"
#include "layers/attention.hpp"
