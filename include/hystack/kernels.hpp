#pragma once
/// hystack kernels module.
#ifndef HYSTACK_MODULE
#define HYSTACK_MODULE
#endif
#include "core.hpp"
#include "kernels/linear.hpp"
#include "kernels/rmsnorm.hpp"
