#pragma once
/// hystack stack module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "layers.hpp"
