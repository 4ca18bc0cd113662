#pragma once
/// hystack kernels module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "kernels/linear.hpp"
#include "kernels/dot_bf16.hpp"
#include "kernels/dot_q8_0.hpp"
#include "kernels/linear_typed.hpp"
#include "kernels/project.hpp"
#include "kernels/rmsnorm.hpp"
#include "kernels/causal_conv1d.hpp"
#include "kernels/selective_scan.hpp"
#include "kernels/attention.hpp"
#include "kernels/rope.hpp"
#include "kernels/kv_cache.hpp"
#include "kernels/moe.hpp"
