#pragma once
// io/ reaching up into the model: refused
#include "../core/error.hpp"
#include "../model/lm.hpp"
