#pragma once
#include "module.hpp"

// Layout rules and derived sizes of hybrid models, each computed here and only here: config
// parsers (io/) and stacks (stack/) both call these, so they cannot disagree.

#include <cstddef>

namespace hystack {

/// HF's periodic placement (Jamba's attention and expert layers): layer i is chosen when
/// i % period == offset; period 0 chooses none.
constexpr bool periodic(std::size_t layer, std::size_t period, std::size_t offset) {
    return period != 0 && layer % period == offset;
}

/// Mamba's inner width: expand * d_model.
constexpr std::size_t mamba_d_inner(std::size_t expand, std::size_t d_model) { return expand * d_model; }

/// Mamba's dt rank when the config says "auto": ceil(d_model / 16).
constexpr std::size_t mamba_dt_rank_auto(std::size_t d_model) { return (d_model + 15) / 16; }

/// Attention head width: d_model / heads (0 without heads; callers check divisibility).
constexpr std::size_t attention_head_dim(std::size_t d_model, std::size_t heads) { return heads ? d_model / heads : 0; }

}  // namespace hystack
