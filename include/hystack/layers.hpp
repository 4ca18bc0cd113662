#pragma once
/// hystack layers module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "kernels.hpp"
