#pragma once
#include "../core/module.hpp"

// CausalLM = embed_tokens -> hybrid stack -> final_layernorm -> lm_head (HF JambaForCausalLM),
// with prefill (chunked, state carried), single and batched decode steps, sampling, streaming
// generation and rollback through state snapshots.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../kernels/linear.hpp"
#include "../kernels/rmsnorm.hpp"
#include "../stack/hybrid_stack.hpp"
#include "../stack/snapshots.hpp"
#include "sampling.hpp"

namespace hystack {

/// Shape of a causal LM: vocabulary, head tying and the stack.
struct ModelConfig {
    std::size_t vocab_size = 0;        // vocab_size
    bool tie_word_embeddings = false;  // lm_head shares embed_tokens' weights
    StackConfig stack;
};

/// Options of generate().
struct GenerateOptions {
    std::size_t max_new_tokens = 16;
    SamplingParams sampling = {};
    std::vector<token_id> stop_tokens = {};  // generation ends after emitting one of these
};

/// Timings of a generate() call.
struct GenerateStats {
    std::size_t prompt_tokens = 0, generated_tokens = 0, decode_steps = 0;
    double prefill_seconds = 0, decode_seconds = 0;
    double prefill_tokens_per_second() const { return prefill_seconds > 0 ? double(prompt_tokens) / prefill_seconds : 0; }
    double decode_tokens_per_second() const { return decode_seconds > 0 ? double(decode_steps) / decode_seconds : 0; }
};

/// A causal language model around a stack (StackT: hystack::Stack for any HF config, or a
/// compile-time HybridStack<std::ratio<A, P>>). Not reentrant (scratch buffers); states are per
/// sequence. Logit spans/views returned by prefill/step stay valid until the next call.
template <class StackT = Stack>
class BasicCausalLM {
public:
    using State = typename StackT::State;
    /// Called during prefill with (tokens done, tokens total), once per chunk.
    using Progress = std::function<void(std::size_t, std::size_t)>;

    explicit BasicCausalLM(const ModelConfig& cfg) : BasicCausalLM(cfg, StackT(cfg.stack)) {}
    BasicCausalLM(const ModelConfig& cfg, StackT&& stack) : cfg_(cfg), stack_(std::move(stack)) {
        check(cfg.vocab_size > 0, "CausalLM: vocab_size must be > 0");
        check(stack_.d_model() == cfg.stack.d_model, "CausalLM: stack d_model ", stack_.d_model(), ", config ",
              cfg.stack.d_model);
        const std::size_t d = cfg.stack.d_model;
        embed_.resize(cfg.vocab_size, d);
        final_norm_.resize(d);
        std::fill(final_norm_.begin(), final_norm_.end(), 1.0f);
        hidden_.resize(d);
        if (!cfg.tie_word_embeddings) lm_head_.resize(cfg.vocab_size, d);
    }
    BasicCausalLM(BasicCausalLM&&) noexcept = default;
    BasicCausalLM& operator=(BasicCausalLM&&) noexcept = default;

    const ModelConfig& config() const { return cfg_; }
    std::size_t vocab_size() const { return cfg_.vocab_size; }
    std::size_t d_model() const { return cfg_.stack.d_model; }
    StackT& stack() { return stack_; }
    const StackT& stack() const { return stack_; }
    const Schedule& schedule() const { return stack_.schedule(); }

    /// Every weight with its full HF name: "model.embed_tokens.weight", "model.layers.{i}.*",
    /// "model.final_layernorm.weight", "lm_head.weight" (absent when tied).
    ParamList params() {
        ParamList out;
        out.push_back({"model.embed_tokens.weight", {cfg_.vocab_size, d_model()}, embed_.span()});
        append_params(out, "model.", stack_.params());
        out.push_back({"model.final_layernorm.weight", {d_model()}, final_norm_.span()});
        if (!cfg_.tie_word_embeddings) out.push_back({"lm_head.weight", {cfg_.vocab_size, d_model()}, lm_head_.span()});
        return out;
    }
    /// Number of parameters (tied head counted once).
    std::size_t num_params() {
        std::size_t n = 0;
        for (auto& p : params()) n += p.data.size();
        return n;
    }
    /// Bytes of weights one decode step reads: every matrix once, one embedding row, and on MoE
    /// layers top_k of num_experts experts (plus the router). The figure decode speed is bounded by.
    std::size_t weight_bytes_per_token() {
        std::size_t n = 0;
        const std::size_t E = cfg_.stack.num_experts, k = cfg_.stack.num_experts_per_tok;
        for (auto& p : params()) {
            if (p.name == "model.embed_tokens.weight" && !cfg_.tie_word_embeddings)
                n += d_model() * sizeof(float);
            else if (p.name.find(".feed_forward.experts.") != std::string::npos && E > 0)
                n += p.data.size_bytes() * k / E;
            else
                n += p.data.size_bytes();
        }
        return n;
    }
    /// Call after filling params() (loaders do).
    void on_weights_loaded() { stack_.on_weights_loaded(); }

    /// A fresh state; global attention layers can hold max_context tokens.
    State make_state(std::size_t max_context) const { return stack_.make_state(max_context); }
    MemoryReport memory_report(std::size_t context_length) const { return stack_.memory_report(context_length); }

    /// Tokens per prefill chunk (bounds scratch memory for long prompts; state carries across).
    void set_prefill_chunk(std::size_t n) {
        check(n > 0, "CausalLM: prefill chunk must be > 0");
        chunk_ = n;
    }
    void set_progress(Progress p) { progress_ = std::move(p); }

    /// Feeds ids [L >= 1] and returns the logits [vocab] at the last position.
    template <Executor Exec>
    std::span<const float> prefill(std::span<const token_id> ids, State& st, Exec& exec) {
        check(!ids.empty(), "CausalLM::prefill: expected at least one token, got none");
        run(ids, st, exec, nullptr);
        head_rows(MatrixView<const float>(hidden_.data(), 1, d_model()), MatrixView<float>(logits_.get(vocab_size()), 1, vocab_size()), exec);
        return {logits_.buf.data(), vocab_size()};
    }
    /// Feeds ids [L] and returns the logits at every position [L, vocab].
    template <Executor Exec>
    Matrix<float> prefill_all(std::span<const token_id> ids, State& st, Exec& exec) {
        Matrix<float> out(ids.size(), vocab_size());
        if (ids.empty()) return out;
        run(ids, st, exec, &out);
        return out;
    }

    /// Feeds one token and returns the logits [vocab] after it. No allocation once warm.
    template <Executor Exec>
    std::span<const float> step(token_id id, State& st, Exec& exec) {
        const std::size_t d = d_model();
        float* x = x_.get(d);
        embed_row(id, x);
        stack_.step(std::span<float>(x, d), st, exec);
        float* h = hidden_.data();
        kernels::rmsnorm_row(x, final_norm_.data(), h, d, cfg_.stack.rms_norm_eps);
        head_rows(MatrixView<const float>(h, 1, d), MatrixView<float>(logits_.get(vocab_size()), 1, vocab_size()), exec);
        return {logits_.buf.data(), vocab_size()};
    }

    /// One token for each of B independent sequences: ids [B], states [B]; returns logits [B, vocab].
    template <Executor Exec>
    MatrixView<const float> step_batch(std::span<const token_id> ids, std::span<State* const> states, Exec& exec) {
        check(ids.size() == states.size(), "CausalLM::step_batch: ", ids.size(), " ids for ", states.size(), " states");
        const std::size_t B = ids.size(), d = d_model();
        MatrixView<float> x(x_.get(B * d), B, d);
        for (std::size_t b = 0; b < B; ++b) embed_row(ids[b], x.row(b));
        stack_.step_batch(x, states, exec);
        MatrixView<float> h(hb_.get(B * d), B, d);
        for (std::size_t b = 0; b < B; ++b)
            kernels::rmsnorm_row(x.row(b), final_norm_.data(), h.row(b), d, cfg_.stack.rms_norm_eps);
        if (B) std::copy(h.row(B - 1), h.row(B - 1) + d, hidden_.data());
        MatrixView<float> logits(logits_.get(B * vocab_size()), B, vocab_size());
        head_rows(MatrixView<const float>(h), logits, exec);
        return logits;
    }

    /// final_layernorm output (the lm_head input) of the last position processed [d_model].
    std::span<const float> last_hidden() const { return hidden_.span(); }

    /// Prefills `prompt` (>= 1 token), then samples up to max_new_tokens tokens, calling
    /// on_token(id) for each as it is drawn (return false from it to stop; a void callback never
    /// stops). Ends after a stop token. Every generated token but the last is fed back, so the
    /// state has seen prompt + generated[0 .. n-2] at the end (feed the last one to continue).
    template <Executor Exec, class OnToken>
    std::vector<token_id> generate(std::span<const token_id> prompt, State& st, const GenerateOptions& opt,
                                   OnToken&& on_token, Exec& exec, GenerateStats* stats = nullptr) {
        using clock = std::chrono::steady_clock;
        Sampler sampler(opt.sampling);
        GenerateStats s;
        s.prompt_tokens = prompt.size();
        std::vector<token_id> out;
        out.reserve(opt.max_new_tokens);
        auto t0 = clock::now();
        std::span<const float> logits = prefill(prompt, st, exec);
        auto t1 = clock::now();
        s.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
        for (std::size_t i = 0; i < opt.max_new_tokens; ++i) {
            const token_id t = sampler.sample(logits);
            out.push_back(t);
            bool go = true;
            if constexpr (std::is_same_v<std::invoke_result_t<OnToken&, token_id>, void>)
                on_token(t);
            else
                go = bool(on_token(t));
            if (!go || i + 1 == opt.max_new_tokens) break;
            if (std::find(opt.stop_tokens.begin(), opt.stop_tokens.end(), t) != opt.stop_tokens.end()) break;
            auto a = clock::now();
            logits = step(t, st, exec);
            s.decode_seconds += std::chrono::duration<double>(clock::now() - a).count();
            ++s.decode_steps;
        }
        s.generated_tokens = out.size();
        if (stats) *stats = s;
        return out;
    }

    /// Rolls st back to its first n tokens (1 <= n <= st.length()): restores the newest snapshot
    /// before n (or starts over) and re-feeds history[snapshot .. n). history = every token fed
    /// to st so far. Returns the logits after token n-1, so generation continues from there.
    template <Executor Exec>
    std::span<const float> rollback(State& st, Snapshots<State>& snaps, std::span<const token_id> history, std::size_t n,
                                    Exec& exec) {
        check(history.size() == st.length(), "CausalLM::rollback: history has ", history.size(),
              " tokens, the state has seen ", st.length());
        check(n >= 1 && n <= st.length(), "CausalLM::rollback: target ", n, " not in [1, ", st.length(), "]");
        if (const State* s = snaps.at_or_before(n - 1))
            st = *s;
        else
            st.reset();
        snaps.drop_after(st.length());
        return prefill(history.subspan(st.length(), n - st.length()), st, exec);
    }

    /// Serial overloads.
    std::span<const float> prefill(std::span<const token_id> ids, State& st) {
        SerialExecutor s;
        return prefill(ids, st, s);
    }
    std::span<const float> step(token_id id, State& st) {
        SerialExecutor s;
        return step(id, st, s);
    }

    std::span<float> embed_tokens() { return embed_.span(); }
    std::span<float> final_layernorm() { return final_norm_.span(); }
    /// The head's weights [vocab, d_model] (embed_tokens when tied).
    MatrixView<const float> lm_head() const {
        return cfg_.tie_word_embeddings ? embed_.view() : lm_head_.view();
    }

private:
    void embed_row(token_id id, float* x) const {
        check(id >= 0 && std::size_t(id) < cfg_.vocab_size, "CausalLM: token id ", id, " out of range [0, ",
              cfg_.vocab_size, ")");
        std::copy(embed_.row(std::size_t(id)), embed_.row(std::size_t(id)) + d_model(), x);
    }

    // logits[r] = h[r] . lm_head^T
    template <Executor Exec>
    void head_rows(MatrixView<const float> h, MatrixView<float> logits, Exec& exec) const {
        kernels::linear(h, lm_head(), {}, logits, exec);
    }

    // Runs ids through the stack in chunks; leaves the last position's normed hidden in hidden_;
    // with all != nullptr writes every position's logits into *all.
    template <Executor Exec>
    void run(std::span<const token_id> ids, State& st, Exec& exec, Matrix<float>* all) {
        for (auto id : ids)
            check(id >= 0 && std::size_t(id) < cfg_.vocab_size, "CausalLM::prefill: token id ", id,
                  " out of range [0, ", cfg_.vocab_size, ")");
        const std::size_t d = d_model(), V = vocab_size();
        for (std::size_t done = 0; done < ids.size();) {
            const std::size_t L = std::min(chunk_, ids.size() - done);
            MatrixView<float> x(x_.get(L * d), L, d);
            for (std::size_t r = 0; r < L; ++r) embed_row(ids[done + r], x.row(r));
            stack_.prefill(x, st, exec);
            if (all) {
                MatrixView<float> h(hb_.get(L * d), L, d);
                for (std::size_t r = 0; r < L; ++r)
                    kernels::rmsnorm_row(x.row(r), final_norm_.data(), h.row(r), d, cfg_.stack.rms_norm_eps);
                head_rows(MatrixView<const float>(h), MatrixView<float>(all->row(done), L, V), exec);
            }
            kernels::rmsnorm_row(x.row(L - 1), final_norm_.data(), hidden_.data(), d, cfg_.stack.rms_norm_eps);
            done += L;
            if (progress_) progress_(done, ids.size());
        }
    }

    ModelConfig cfg_;
    StackT stack_;
    Matrix<float> embed_;      // [vocab, d_model]
    Buffer<float> final_norm_; // [d_model]
    Matrix<float> lm_head_;    // [vocab, d_model], empty when tied
    std::size_t chunk_ = 512;
    Progress progress_;
    detail::Scratch x_, hb_, logits_;
    Buffer<float> hidden_;     // [d_model] final-norm output of the last position
};

/// A causal LM over a run-time stack (any HF Jamba config).
using CausalLM = BasicCausalLM<Stack>;

}  // namespace hystack
