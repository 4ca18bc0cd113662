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
#include "../core/workspace.hpp"
#include "../layers/embedding.hpp"
#include "../layers/norm.hpp"
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
/// compile-time HybridStack<std::ratio<A, P>>): embedding -> stack -> final norm -> LM head, each a
/// small layer. Immutable once loaded: prefill/step/generate are const and keep their scratch in the
/// sequence state's workspace, so one model serves any number of threads, each with its own states.
/// Logit spans/views returned by prefill/step stay valid until the next call with the same state.
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
        embed_ = Embedding(cfg.vocab_size, d, fitting_type(cfg.stack.weights, d));
        final_norm_ = RMSNorm(d, cfg.stack.rms_norm_eps);
        head_ = cfg.tie_word_embeddings ? LMHead::tied() : LMHead(cfg.vocab_size, d, fitting_type(cfg.stack.weights, d));
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
        out.push_back(embed_.param("model.embed_tokens.weight"));
        append_params(out, "model.", stack_.params());
        out.push_back(final_norm_.param("model.final_layernorm.weight"));
        if (!head_.is_tied()) out.push_back(head_.param("lm_head.weight"));
        return out;
    }
    /// Number of parameters (tied head counted once).
    std::size_t num_params() {
        std::size_t n = 0;
        for (auto& p : params()) n += param_numel(p);
        return n;
    }
    /// Bytes of weights one decode step reads: every matrix once, one embedding row, and on MoE
    /// layers top_k of num_experts experts (plus the router). The figure decode speed is bounded by.
    std::size_t weight_bytes_per_token() {
        std::size_t n = 0;
        const std::size_t E = cfg_.stack.num_experts, k = cfg_.stack.num_experts_per_tok;
        for (auto& p : params()) {
            if (p.name == "model.embed_tokens.weight" && !cfg_.tie_word_embeddings)
                n += param_bytes(p) / vocab_size();
            else if (p.name.find(".feed_forward.experts.") != std::string::npos && E > 0)
                n += param_bytes(p) * k / E;
            else
                n += param_bytes(p);
        }
        return n;
    }
    /// Call after filling params() (loaders do): layers recompute what they derive from weights.
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
    std::span<const float> prefill(std::span<const token_id> ids, State& st, Exec& exec) const {
        check(!ids.empty(), "CausalLM::prefill: expected at least one token, got none");
        Work& w = work(st);
        run(ids, st, exec, nullptr);
        MatrixView<float> logits(w.logits.get(vocab_size()), 1, vocab_size());
        head_.forward(MatrixView<const float>(w.hidden.data(), 1, d_model()), embed_.table(), logits, exec);
        return logits.row_span(0);
    }
    /// Feeds ids [L] and returns the logits at every position [L, vocab].
    template <Executor Exec>
    Matrix<float> prefill_all(std::span<const token_id> ids, State& st, Exec& exec) const {
        Matrix<float> out(ids.size(), vocab_size());
        if (ids.empty()) return out;
        run(ids, st, exec, &out);
        return out;
    }

    /// Feeds one token and returns the logits [vocab] after it. No allocation once warm.
    template <Executor Exec>
    std::span<const float> step(token_id id, State& st, Exec& exec) const {
        State* one[1] = {&st};
        return step_batch(std::span<const token_id>(&id, 1), std::span<State* const>(one, 1), exec).row_span(0);
    }

    /// One token for each of n_seq independent sequences: ids [n_seq], states [n_seq]; returns logits [n_seq, vocab]
    /// (scratch from states[0]'s workspace).
    template <Executor Exec>
    MatrixView<const float> step_batch(std::span<const token_id> ids, std::span<State* const> states, Exec& exec) const {
        check(ids.size() == states.size(), "CausalLM::step_batch: ", ids.size(), " ids for ", states.size(), " states");
        const std::size_t n_seq = ids.size(), d = d_model();
        if (n_seq == 0) return {};
        check(states[0] != nullptr, "CausalLM::step_batch: null state");
        Work& w = work(*states[0]);
        MatrixView<float> x(w.x.get(n_seq * d), n_seq, d);
        for (std::size_t b = 0; b < n_seq; ++b) embed_.lookup(ids[b], x.row(b), "CausalLM");
        stack_.step_batch(x, states, exec);
        MatrixView<float> h(w.h.get(n_seq * d), n_seq, d);
        for (std::size_t b = 0; b < n_seq; ++b) final_norm_.row(x.row(b), h.row(b));
        for (std::size_t b = 0; b < n_seq; ++b) {  // each sequence's last hidden, in its own workspace
            Work& wb = b ? work(*states[b]) : w;
            std::copy(h.row(b), h.row(b) + d, wb.hidden.data());
        }
        MatrixView<float> logits(w.logits.get(n_seq * vocab_size()), n_seq, vocab_size());
        head_.forward(MatrixView<const float>(h), embed_.table(), logits, exec);
        return logits;
    }

    /// final_layernorm output (the lm_head input) of the last position st processed [d_model].
    std::span<const float> last_hidden(State& st) const { return work(st).hidden.span(); }

    /// Prefills `prompt` (>= 1 token), then samples up to max_new_tokens tokens, calling
    /// on_token(id) for each as it is drawn (return false from it to stop; a void callback never
    /// stops). Ends after a stop token. Every generated token but the last is fed back, so the
    /// state has seen prompt + generated[0 .. n-2] at the end (feed the last one to continue).
    template <Executor Exec, class OnToken>
    std::vector<token_id> generate(std::span<const token_id> prompt, State& st, const GenerateOptions& opt,
                                   OnToken&& on_token, Exec& exec, GenerateStats* stats = nullptr) const {
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
                                    Exec& exec) const {
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
    std::span<const float> prefill(std::span<const token_id> ids, State& st) const {
        SerialExecutor s;
        return prefill(ids, st, s);
    }
    std::span<const float> step(token_id id, State& st) const {
        SerialExecutor s;
        return step(id, st, s);
    }

    Embedding& embedding() { return embed_; }
    RMSNorm& final_norm() { return final_norm_; }
    std::span<float> embed_tokens() { return embed_.param("embed_tokens").data; }
    std::span<float> final_layernorm() { return final_norm_.weight(); }
    /// The head's weights [vocab, d_model] (embed_tokens when tied).
    WeightView lm_head() const { return head_.weight(embed_.table()); }

private:
    // Scratch of one caller (in its state's workspace): the residual rows, their normed copies, the
    // logits, and the last position's final-norm output.
    struct Work {
        detail::GrowBuffer x, h, logits;
        Buffer<float> hidden;  // [d_model]
    };
    Work& work(State& st) const {
        Work& w = st.workspace().template get<Work>();
        if (w.hidden.size() != d_model()) w.hidden.resize(d_model());
        return w;
    }

    // Runs ids through the stack in chunks; leaves the last position's normed hidden in the state's
    // workspace; with all != nullptr writes every position's logits into *all.
    template <Executor Exec>
    void run(std::span<const token_id> ids, State& st, Exec& exec, Matrix<float>* all) const {
        for (auto id : ids) embed_.check_id(id, "CausalLM::prefill");
        Work& w = work(st);
        const std::size_t d = d_model(), V = vocab_size();
        for (std::size_t done = 0; done < ids.size();) {
            const std::size_t L = std::min(chunk_, ids.size() - done);
            MatrixView<float> x(w.x.get(L * d), L, d);
            for (std::size_t r = 0; r < L; ++r) embed_.lookup(ids[done + r], x.row(r));
            stack_.prefill(x, st, exec);
            if (all) {
                MatrixView<float> h(w.h.get(L * d), L, d);
                for (std::size_t r = 0; r < L; ++r) final_norm_.row(x.row(r), h.row(r));
                head_.forward(MatrixView<const float>(h), embed_.table(), MatrixView<float>(all->row(done), L, V), exec);
            }
            final_norm_.row(x.row(L - 1), w.hidden.data());
            done += L;
            if (progress_) progress_(done, ids.size());
        }
    }

    ModelConfig cfg_;
    StackT stack_;
    Embedding embed_;    // [vocab, d_model]
    RMSNorm final_norm_; // [d_model]
    LMHead head_;        // [vocab, d_model] or tied to embed_
    std::size_t chunk_ = 512;
    Progress progress_;
};

/// A causal LM over a run-time stack (any HF Jamba config).
using CausalLM = BasicCausalLM<Stack>;

}  // namespace hystack
