#pragma once
#include "../core/module.hpp"

// Stack: a sequence of blocks by a schedule, each block
//   x += m * mixer(mixer_norm(x));  x += m * ff(ff_norm(x))        (m: residual_multiplier, 1 but for Granite)
// with either sub-layer optional. Mixers and feed-forwards are built by kind name from a KindRegistry
// (built-in: mamba1, attention, dense, moe), so the loop below is written once and never names a
// concrete layer. HybridStack<std::ratio<A, P>> fixes the mixer schedule at compile time.
//
// A stack is immutable while it runs: prefill/step/step_batch are const, scratch lives in the
// sequence state's workspace, so one stack serves any number of threads, each with its own states.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"
#include "../kernels/kv_cache.hpp"
#include "../layers/norm.hpp"
#include "builtin_kinds.hpp"
#include "config.hpp"
#include "kinds.hpp"
#include "memory_report.hpp"
#include "schedule.hpp"
#include "state.hpp"

namespace hystack {

/// One block of a stack: a mixer and/or a feed-forward, each behind its own RMSNorm.
struct Block {
    LayerKind kind;
    std::unique_ptr<Mixer> mixer;     // null: no mixer sub-layer
    std::unique_ptr<FeedForward> ff;  // null: no feed-forward sub-layer
    RMSNorm mixer_norm, ff_norm;      // HF input_layernorm, pre_ff_layernorm
    std::string mixer_module, ff_module;  // HF module names: "mamba" / "self_attn", "feed_forward"
};

/// A hybrid stack with a run-time schedule (any HF Jamba config, or any schedule of registered kinds).
class Stack {
public:
    using State = StackState;

    /// Builds schedule's blocks from `kinds` (the built-in kinds by default).
    Stack(const StackConfig& cfg, Schedule schedule, const KindRegistry& kinds = builtin_kinds())
        : cfg_(cfg), schedule_(std::move(schedule)) {
        cfg_.validate(schedule_);
        blocks_.reserve(schedule_.size());
        for (std::size_t i = 0; i < schedule_.size(); ++i) {
            Block b;
            b.kind = schedule_[i];
            if (!b.kind.mixer.empty()) {
                b.mixer = kinds.make_mixer(b.kind.mixer, cfg_, i);
                b.mixer_module = kinds.mixer_module(b.kind.mixer);
                b.mixer_norm = RMSNorm(cfg_.d_model, cfg_.rms_norm_eps);
            }
            if (!b.kind.ff.empty()) {
                b.ff = kinds.make_feed_forward(b.kind.ff, cfg_, i);
                b.ff_module = kinds.feed_forward_module(b.kind.ff);
                b.ff_norm = RMSNorm(cfg_.d_model, cfg_.rms_norm_eps);
            }
            blocks_.push_back(std::move(b));
        }
    }
    /// Run-time stack from an HF-style config: attention where i % attn_layer_period == attn_layer_offset.
    explicit Stack(const StackConfig& cfg, const KindRegistry& kinds = builtin_kinds())
        : Stack(cfg,
                Schedule::from_periods(cfg.num_layers, cfg.attn_layer_period ? cfg.attn_layer_period : 1,
                                       cfg.attn_layer_offset, cfg.ff_schedule()),
                kinds) {
        check(cfg.attn_layer_period > 0, "Stack: attn_layer_period must be > 0 for a run-time stack");
    }
    Stack(Stack&&) noexcept = default;
    Stack& operator=(Stack&&) noexcept = default;

    const StackConfig& config() const { return cfg_; }
    /// The kind of every block.
    const Schedule& schedule() const { return schedule_; }
    std::size_t num_layers() const { return blocks_.size(); }
    std::size_t d_model() const { return cfg_.d_model; }

    Block& block(std::size_t i) { return blocks_.at(i); }
    const Block& block(std::size_t i) const { return blocks_.at(i); }
    /// Block i's mixer as layer type L (e.g. MambaMixer), or nullptr when it is another type or absent.
    template <class L>
    L* mixer_as(std::size_t i) {
        auto* m = dynamic_cast<MixerOf<L>*>(blocks_.at(i).mixer.get());
        return m ? &m->layer() : nullptr;
    }
    template <class L>
    L* feed_forward_as(std::size_t i) {
        auto* f = dynamic_cast<FeedForwardOf<L>*>(blocks_.at(i).ff.get());
        return f ? &f->layer() : nullptr;
    }

    /// Weights with HF names relative to the model: "layers.{i}.<mixer module>.*" (mamba / self_attn),
    /// "layers.{i}.<ff module>.*" (feed_forward), "layers.{i}.input_layernorm.weight",
    /// "layers.{i}.pre_ff_layernorm.weight".
    ParamList params() {
        ParamList out;
        for (std::size_t i = 0; i < blocks_.size(); ++i) {
            auto& b = blocks_[i];
            const std::string p = "layers." + std::to_string(i) + ".";
            if (b.mixer) append_params(out, p + b.mixer_module + ".", b.mixer->params());
            if (b.ff) append_params(out, p + b.ff_module + ".", b.ff->params());
            if (b.mixer) out.push_back(b.mixer_norm.param(p + "input_layernorm.weight"));
            if (b.ff) out.push_back(b.ff_norm.param(p + "pre_ff_layernorm.weight"));
        }
        return out;
    }
    /// Tells every layer that its weights changed (derived data, e.g. Mamba's A = -exp(A_log)).
    void on_weights_loaded() {
        for (auto& b : blocks_) {
            if (b.mixer) b.mixer->on_weights_loaded();
            if (b.ff) b.ff->on_weights_loaded();
        }
    }

    /// A fresh state for one sequence; global attention layers hold up to max_context tokens.
    State make_state(std::size_t max_context) const {
        State s;
        s.layers_.reserve(blocks_.size());
        for (auto& b : blocks_) s.layers_.push_back(b.mixer ? b.mixer->make_state(max_context) : nullptr);
        return s;
    }

    /// Bytes of per-sequence state at `context_length` tokens, next to an all-attention stack of the
    /// same shape. KV: the layers whose state grows with the context; SSM: the fixed-size ones.
    MemoryReport memory_report(std::size_t context_length) const {
        MemoryReport r;
        r.context_length = context_length;
        for (auto& b : blocks_) {
            if (!b.mixer) continue;
            const std::size_t n = b.mixer->state_bytes(context_length);
            if (b.mixer->caches_tokens()) {
                ++r.attention_layers;
                r.kv_bytes += n;
            } else {
                ++r.mamba_layers;
                r.ssm_bytes += n;
            }
        }
        r.total_bytes = r.kv_bytes + r.ssm_bytes;
        r.all_attention_kv_bytes = blocks_.size() * kv_bytes_per_layer(context_length);
        return r;
    }
    /// KV bytes of one attention layer of this config's shape at context_length tokens.
    std::size_t kv_bytes_per_layer(std::size_t context_length) const {
        const std::size_t heads = cfg_.num_attention_heads ? cfg_.num_attention_heads : 1;
        const std::size_t kv_heads = cfg_.num_key_value_heads ? cfg_.num_key_value_heads : heads;
        const std::size_t head_dim = attention_head_dim(cfg_.d_model, heads);
        return cfg_.sliding_window ? WindowKVCache::bytes_for(cfg_.sliding_window, kv_heads, head_dim)
                                   : KVCache::bytes_for(context_length, kv_heads, head_dim);
    }

    /// Runs L tokens through every block: x [L, d_model] is the residual stream, updated in place.
    template <Executor Exec>
    void prefill(MatrixView<float> x, State& st, Exec& exec) const {
        check_shape("Stack::prefill: x", x, any, cfg_.d_model);
        check_state(st, "Stack::prefill");
        if (x.rows == 0) return;
        run(x, st.ws_, exec, [&](const Block& b, std::size_t i, MatrixView<const float> h, MatrixView<float> y, Workspace& ws,
                                 ExecutorRef ex) { b.mixer->prefill(h, *st.layers_[i], y, ws, ex); });
        st.tokens_ += x.rows;
    }

    /// One token: x [d_model], the residual stream, updated in place. No allocation once warm.
    template <Executor Exec>
    void step(std::span<float> x, State& st, Exec& exec) const {
        check_size("Stack::step: x", x, cfg_.d_model);
        check_state(st, "Stack::step");
        State* one[1] = {&st};
        step_batch(MatrixView<float>(x.data(), 1, x.size()), std::span<State* const>(one, 1), exec);
    }

    /// One token for each of n_seq independent sequences: x [n_seq, d_model] (row b belongs to states[b]).
    /// Scratch comes from states[0]'s workspace.
    template <Executor Exec>
    void step_batch(MatrixView<float> x, std::span<State* const> states, Exec& exec) const {
        check_shape("Stack::step_batch: x", x, states.size(), cfg_.d_model);
        for (auto* s : states) {
            check(s != nullptr, "Stack::step_batch: null state");
            check_state(*s, "Stack::step_batch");
        }
        const std::size_t n_seq = x.rows;
        if (n_seq == 0) return;
        auto& ptrs = states[0]->ws_.get<detail::StatePointers<LayerState>>().v;
        if (ptrs.size() < n_seq) ptrs.resize(n_seq);  // grow only: no allocation once warm
        run(x, states[0]->ws_, exec, [&](const Block& b, std::size_t i, MatrixView<const float> h, MatrixView<float> y,
                                         Workspace& ws, ExecutorRef ex) {
            for (std::size_t s = 0; s < n_seq; ++s) ptrs[s] = states[s]->layers_[i].get();
            b.mixer->step_batch(h, std::span<LayerState* const>(ptrs.data(), n_seq), y, ws, ex);
        });
        for (auto* s : states) s->tokens_ += 1;
    }

    /// Serial overloads.
    void prefill(MatrixView<float> x, State& st) const {
        SerialExecutor s;
        prefill(x, st, s);
    }
    void step(std::span<float> x, State& st) const {
        SerialExecutor s;
        step(x, st, s);
    }

private:
    struct Work {  // the residual branch's input h and output y [rows, d_model]
        detail::GrowBuffer h, y;
    };

    void check_state(const State& st, const char* who) const {
        check(st.layers_.size() == blocks_.size(), who, ": state has ", st.layers_.size(), " layers, the stack has ",
              blocks_.size(), " (make it with this stack's make_state)");
    }

    // The one decoder loop: for every block, x += m * mixer(norm(x)) (through `mix`, which runs the
    // mixer in prefill or batched-step form), then x += m * ff(norm(x)).
    template <Executor Exec, class Mix>
    void run(MatrixView<float> x, Workspace& ws, Exec& exec_in, Mix&& mix) const {
        ExecutorRef exec(exec_in);
        const std::size_t n = x.rows, d = cfg_.d_model;
        Work& w = ws.get<Work>();
        MatrixView<float> h(w.h.get(n * d), n, d), y(w.y.get(n * d), n, d);
        for (std::size_t i = 0; i < blocks_.size(); ++i) {
            const Block& b = blocks_[i];
            if (b.mixer) {
                b.mixer_norm.forward(MatrixView<const float>(x), h, exec);
                mix(b, i, MatrixView<const float>(h), y, ws, exec);
                add_rows(x, y, exec);
            }
            if (b.ff) {
                b.ff_norm.forward(MatrixView<const float>(x), h, exec);
                b.ff->forward(MatrixView<const float>(h), y, ws, exec);
                add_rows(x, y, exec);
            }
        }
    }

    // x += m * y, row by row (m = residual_multiplier; exactly x += y when it is 1).
    void add_rows(MatrixView<float> x, MatrixView<const float> y, ExecutorRef exec) const {
        const std::size_t d = cfg_.d_model;
        const float m = cfg_.residual_multiplier;
        auto body = [&](std::size_t b, std::size_t e) {
            for (std::size_t r = b; r < e; ++r) {
                float* xr = x.row(r);
                const float* yr = y.row(r);
                if (m == 1.0f)
                    for (std::size_t c = 0; c < d; ++c) xr[c] += yr[c];
                else
                    for (std::size_t c = 0; c < d; ++c) xr[c] += m * yr[c];
            }
        };
        if (x.rows < 64)
            body(0, x.rows);
        else
            exec.parallel_for(x.rows, 32, body);
    }

    StackConfig cfg_;
    Schedule schedule_;
    std::vector<Block> blocks_;
};

/// A compile-time hybrid stack: Ratio = std::ratio<A, P>, A attention layers in every period of P
/// layers (placed by Placement, Jamba's middle-of-period by default), Mamba elsewhere; the
/// feed-forward schedule comes from the config. HybridStack<std::ratio<1, 8>> is Jamba's block.
/// A config whose attn_layer_period/offset describe a different layout throws hystack::error.
template <class Ratio, class Placement = JambaPlacement>
class HybridStack : public Stack {
public:
    using ratio = RatioSchedule<Ratio, Placement>;
    static constexpr std::size_t attention_per_period = ratio::attention_per_period;
    static constexpr std::size_t period = ratio::period;
    /// Mixer of layer i, known at compile time.
    static constexpr MixerKind mixer(std::size_t layer) { return ratio::mixer(layer); }

    explicit HybridStack(const StackConfig& cfg, const KindRegistry& kinds = builtin_kinds())
        : Stack(cfg, checked_schedule(cfg), kinds) {}

    /// The schedule this ratio gives cfg; throws when cfg's HF attention layout disagrees.
    static Schedule checked_schedule(const StackConfig& cfg) {
        Schedule s = Schedule::from_ratio<Ratio, Placement>(cfg.num_layers, cfg.ff_schedule());
        if (cfg.attn_layer_period == 0) return s;
        const Schedule hf = Schedule::from_periods(cfg.num_layers, cfg.attn_layer_period, cfg.attn_layer_offset,
                                                   cfg.ff_schedule());
        if (!(hf == s)) {
            auto list = [](const std::vector<std::size_t>& v) {
                std::string r = "{";
                for (std::size_t i = 0; i < v.size(); ++i) r += (i ? ", " : "") + std::to_string(v[i]);
                return r + "}";
            };
            fail("HybridStack<", attention_per_period, ":", period, ">: the config puts attention at layers ",
                 list(hf.indices(MixerKind::attention)), " (attn_layer_period ", cfg.attn_layer_period,
                 ", attn_layer_offset ", cfg.attn_layer_offset, "), the ratio ", attention_per_period, ":", period,
                 " puts it at ", list(s.indices(MixerKind::attention)),
                 "; use the run-time hystack::Stack for this config");
        }
        return s;
    }
};

}  // namespace hystack
