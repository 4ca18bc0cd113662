#pragma once
/// hystack model module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "stack.hpp"
#include "model/sampling.hpp"
#include "model/init.hpp"
#include "model/causal_lm.hpp"
#include "model/presets.hpp"
