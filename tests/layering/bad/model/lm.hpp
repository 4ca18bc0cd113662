#pragma once
#include "../layers/layer.hpp"
