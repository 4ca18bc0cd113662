#pragma once
/// hystack core: errors, views and buffers, executors (thread pool), SIMD wrapper, elementwise math, bf16.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core/error.hpp"
#include "core/layout.hpp"
#include "core/view.hpp"
#include "core/executor.hpp"
#include "core/simd.hpp"
#include "core/math.hpp"
#include "core/bf16.hpp"
#include "core/fp16.hpp"
#include "core/q8_0.hpp"
#include "core/simd_dot.hpp"
#include "core/param.hpp"
#include "core/bytes.hpp"
#include "core/weight.hpp"
#include "core/workspace.hpp"
