#pragma once
#include "../core/module.hpp"

// The model's ends as small layers: the token embedding (a table lookup) and the LM head (a
// projection to the vocabulary, or the embedding table itself when tied).

#include <algorithm>
#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/weight.hpp"
#include "../kernels/project.hpp"

namespace hystack {


/// Token embedding: table [vocab, d_model] (HF "embed_tokens.weight"), typed; a looked-up row is
/// widened to f32.
class Embedding {
public:
    Embedding() = default;
    Embedding(std::size_t vocab, std::size_t d, DType type = DType::f32) : table_(vocab, d, type) {}

    std::size_t vocab_size() const { return table_.rows(); }
    std::size_t d_model() const { return table_.cols(); }
    WeightView table() const { return table_.view(); }
    ParamRef param(std::string name) { return table_.param(std::move(name), {vocab_size(), d_model()}); }

    /// Throws hystack::error unless 0 <= id < vocab ("who: token id 70 out of range [0, 64)").
    void check_id(token_id id, const char* who) const {
        if (id < 0 || std::size_t(id) >= vocab_size()) [[unlikely]]
            fail(who, ": token id ", id, " out of range [0, ", vocab_size(), ")");
    }
    /// x [d_model] = table[id], widened to f32.
    void lookup(token_id id, float* x, const char* who = "Embedding") const {
        check_id(id, who);
        const WeightView row = table_.view().rows_slice(std::size_t(id), 1);
        decode_row(row.type, std::span<const std::byte>(row.data, row.row_bytes()), std::span<float>(x, d_model()));
    }

private:
    Weight table_;  // [vocab, d_model]
};

/// LM head: logits [L, vocab] = h [L, d_model] . W^T, W [vocab, d_model] (HF "lm_head.weight") typed,
/// or the embedding table when the model ties them (no weight of its own then: the caller passes the
/// table to weight(), so a retyped or moved table is always the one used).
class LMHead {
public:
    LMHead() = default;
    /// An untied head of its own [vocab, d_model].
    LMHead(std::size_t vocab, std::size_t d, DType type = DType::f32) : own_(vocab, d, type) {}
    /// A head tied to the embedding table.
    static LMHead tied() {
        LMHead h;
        h.tied_ = true;
        return h;
    }

    bool is_tied() const { return tied_; }
    /// The head's weights: `table` (the embedding's) when tied, its own otherwise.
    WeightView weight(const WeightView& table) const { return tied_ ? table : own_.view(); }
    ParamRef param(std::string name) { return own_.param(std::move(name), {own_.rows(), own_.cols()}); }

    /// logits [L, vocab] = h [L, d_model] . weight(table)^T.
    template <Executor Exec>
    void forward(MatrixView<const float> h, const WeightView& table, MatrixView<float> logits, Exec& exec) const {
        kernels::project(h, weight(table), {}, logits, exec);
    }

private:
    Weight own_;         // [vocab, d_model], empty when tied
    bool tied_ = false;
};

}  // namespace hystack
