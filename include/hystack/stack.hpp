#pragma once
/// hystack stack module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "layers.hpp"
#include "stack/schedule.hpp"
#include "stack/config.hpp"
#include "stack/hybrid_stack.hpp"
#include "stack/snapshots.hpp"
#include "stack/jamba_layers.hpp"
