#pragma once
/// hystack stack module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "layers.hpp"
#include "stack/schedule.hpp"
#include "stack/config.hpp"
#include "stack/kinds.hpp"
#include "stack/builtin_kinds.hpp"
#include "stack/state.hpp"
#include "stack/memory_report.hpp"
#include "stack/hybrid_stack.hpp"
#include "stack/snapshots.hpp"
