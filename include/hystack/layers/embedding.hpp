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
#include "../kernels/linear.hpp"

namespace hystack {


/// Token embedding: table [vocab, d_model] (HF "embed_tokens.weight"); row id is token id's vector.
class Embedding {
public:
    Embedding() = default;
    Embedding(std::size_t vocab, std::size_t d) : table_(vocab, d) {}

    std::size_t vocab_size() const { return table_.rows(); }
    std::size_t d_model() const { return table_.cols(); }
    MatrixView<const float> table() const { return table_.view(); }
    std::span<float> weight() { return table_.span(); }
    ParamRef param(std::string name) { return {std::move(name), {vocab_size(), d_model()}, table_.span()}; }

    /// Throws hystack::error unless 0 <= id < vocab ("who: token id 70 out of range [0, 64)").
    void check_id(token_id id, const char* who) const {
        if (id < 0 || std::size_t(id) >= vocab_size()) [[unlikely]]
            fail(who, ": token id ", id, " out of range [0, ", vocab_size(), ")");
    }
    /// x [d_model] = table[id].
    void lookup(token_id id, float* x, const char* who = "Embedding") const {
        check_id(id, who);
        std::copy(table_.row(std::size_t(id)), table_.row(std::size_t(id)) + d_model(), x);
    }

private:
    Matrix<float> table_;  // [vocab, d_model]
};

/// LM head: logits [L, vocab] = h [L, d_model] . W^T, W [vocab, d_model] (HF "lm_head.weight"), or the
/// embedding table when the model ties them (no weight of its own then).
class LMHead {
public:
    LMHead() = default;
    /// An untied head of its own [vocab, d_model].
    LMHead(std::size_t vocab, std::size_t d) : own_(vocab, d) {}
    /// A head tied to `table` [vocab, d_model] (the embedding's; must outlive the head's use).
    static LMHead tied(MatrixView<const float> table) {
        LMHead h;
        h.tied_ = table;
        return h;
    }

    bool is_tied() const { return tied_.data != nullptr; }
    MatrixView<const float> weight() const { return is_tied() ? tied_ : MatrixView<const float>(own_.view()); }
    /// The head's own weight (empty when tied).
    std::span<float> own_weight() { return own_.span(); }
    ParamRef param(std::string name) { return {std::move(name), {own_.rows(), own_.cols()}, own_.span()}; }

    template <Executor Exec>
    void forward(MatrixView<const float> h, MatrixView<float> logits, Exec& exec) const {
        kernels::linear(h, weight(), {}, logits, exec);
    }

private:
    Matrix<float> own_;             // [vocab, d_model], empty when tied
    MatrixView<const float> tied_;  // the embedding table when tied
};

}  // namespace hystack
