#pragma once
// a kernel including a layer (as <hystack/...>): refused
#include <vector>
#include <hystack/layers/layer.hpp>
