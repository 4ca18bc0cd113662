#pragma once
#include "../core/module.hpp"

// HybridStack: a stack of HF-Jamba decoder layers, each
//   x += mixer(input_layernorm(x));  x += ff(pre_ff_layernorm(x))
// where the mixer is Mamba or attention and the feed-forward dense SwiGLU or a sparse MoE, by a
// schedule: run-time (BasicStack, any HF config) or compile-time (HybridStack<std::ratio<A, P>>).
// The per-sequence State holds every layer's cache, is a value (copy = fork), and saves to /
// restores from bytes with a versioned header.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "../core/bytes.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../kernels/kv_cache.hpp"
#include "../kernels/rmsnorm.hpp"
#include "config.hpp"
#include "schedule.hpp"

namespace hystack {

/// The layer set of Jamba stacks (MambaMixer, AttentionLayer, SwiGLU, SparseMoE); defined in
/// stack/jamba_layers.hpp. A layer set is a traits class with the four layer types and
/// `static std::unique_ptr<T> make_mamba/make_attention/make_dense/make_moe(const StackConfig&)`.
struct JambaLayers;

/// Memory of per-sequence state at a given context length, and the same figures for an
/// all-attention stack of the same shape (every layer attention with the same heads).
struct MemoryReport {
    std::size_t context_length = 0;
    std::size_t attention_layers = 0, mamba_layers = 0;
    std::size_t kv_bytes = 0;   // KV caches of the attention layers
    std::size_t ssm_bytes = 0;  // conv + ssm states of the Mamba layers
    std::size_t total_bytes = 0;
    std::size_t all_attention_kv_bytes = 0;  // the same shape with attention in every layer
    /// all_attention_kv_bytes / total_bytes.
    double saving() const { return total_bytes ? double(all_attention_kv_bytes) / double(total_bytes) : 0.0; }

    static std::string human(std::size_t bytes) {
        const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = double(bytes);
        int u = 0;
        while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
        std::ostringstream os;
        os.precision(u ? 3 : 0);
        os << std::fixed << v << " " << units[u];
        return os.str();
    }
    /// "context 32768: KV 256.000 MiB (2 attention layers) + SSM 4.250 MiB (14 mamba layers) = ...; all-attention 2.000 GiB (7.9x)"
    std::string to_string() const {
        std::ostringstream os;
        os << "context " << context_length << ": KV " << human(kv_bytes) << " (" << attention_layers
           << " attention layers) + SSM " << human(ssm_bytes) << " (" << mamba_layers << " mamba layers) = "
           << human(total_bytes) << "; all-attention stack: " << human(all_attention_kv_bytes);
        os.precision(1);
        os << std::fixed << " (" << saving() << "x more)";
        return os.str();
    }
};

namespace detail {
/// Grow-only scratch: a Buffer that reallocates only to grow (so decode never allocates once warm).
struct Scratch {
    Buffer<float> buf;
    float* get(std::size_t n) {
        if (buf.size() < n) buf.resize(n);
        return buf.data();
    }
};
template <class T>
concept HasOnWeightsLoaded = requires(T& t) { t.on_weights_loaded(); };
}  // namespace detail

/// A hybrid stack with a run-time schedule. Layers = the layer set (JambaLayers by default).
/// Not reentrant: layers and the stack keep scratch buffers; use one stack per thread of calls
/// (states are per sequence and independent).
template <class Layers = JambaLayers>
class BasicStack {
public:
    using Mamba = typename Layers::Mamba;
    using Attention = typename Layers::Attention;
    using Dense = typename Layers::Dense;
    using MoE = typename Layers::MoE;
    using MambaState = typename Mamba::State;
    using AttentionState = typename Attention::State;
    using LayerState = std::variant<MambaState, AttentionState>;

    /// Per-sequence state: every layer's cache plus the number of tokens seen. A value type:
    /// copying forks the sequence. save()/load() use a versioned, size-checked byte format.
    class State {
    public:
        static constexpr std::uint64_t magic = 0x5441545354534848ull;  // "HHSTSTAT" little-endian
        // 2: attention K caches are saved as transposed 16-key tiles (version 1 held K rows)
        static constexpr std::uint64_t version = 2;

        State() = default;
        /// Tokens seen by this sequence.
        std::size_t length() const { return std::size_t(tokens_); }
        std::size_t num_layers() const { return layers_.size(); }
        /// Bytes of cache and state data (KV caches + conv/ssm states).
        std::size_t bytes() const {
            std::size_t n = 0;
            for (auto& l : layers_) std::visit([&](const auto& s) { n += s.bytes(); }, l);
            return n;
        }
        /// Starts a new sequence (keeps the allocations).
        void reset() {
            for (auto& l : layers_) std::visit([](auto& s) { s.reset(); }, l);
            tokens_ = 0;
        }
        LayerState& layer(std::size_t i) { return layers_.at(i); }
        const LayerState& layer(std::size_t i) const { return layers_.at(i); }

        /// Format v2: u64 magic, u64 version, u64 layers, u64 tokens, then per layer u64 kind
        /// (0 mamba, 1 attention), u64 payload bytes, payload (the layer state's own save()).
        void save(ByteWriter& w) const {
            w.u64(magic);
            w.u64(version);
            w.u64(layers_.size());
            w.u64(tokens_);
            std::vector<std::byte> payload;
            for (auto& l : layers_) {
                payload.clear();
                ByteWriter pw(payload);
                std::visit([&](const auto& s) { s.save(pw); }, l);
                w.u64(l.index());
                w.u64(payload.size());
                w.raw(payload.data(), payload.size());
            }
        }
        std::vector<std::byte> to_bytes() const {
            std::vector<std::byte> out;
            ByteWriter w(out);
            save(w);
            return out;
        }
        /// Restores a state saved by save() into this one, which must come from the same stack
        /// shape (make_state with a capacity that fits). Checks the header, every layer's kind
        /// and sizes, and that nothing trails; on error throws hystack::error and leaves *this as it was.
        void load(ByteReader& r) {
            State tmp = *this;
            tmp.load_in_place(r);
            *this = std::move(tmp);
        }
        /// load() from a whole buffer, which must hold nothing after the state.
        void from_bytes(std::span<const std::byte> bytes) {
            ByteReader r(bytes);
            State tmp = *this;
            tmp.load_in_place(r);
            check(r.remaining() == 0, "State::load: ", r.remaining(), " trailing bytes after the state");
            *this = std::move(tmp);
        }

    private:
        friend class BasicStack;
        void load_in_place(ByteReader& r) {
            const auto m = r.u64("State::load: header");
            check(m == magic, "State::load: not a hystack state (bad magic)");
            const auto v = r.u64("State::load: header");
            check(v == version, "State::load: unsupported state format version ", v, " (this build reads ", version, ")");
            const auto n = r.u64("State::load: header");
            check(n == layers_.size(), "State::load: state has ", n, " layers, the stack has ", layers_.size());
            tokens_ = r.u64("State::load: header");
            for (std::size_t i = 0; i < layers_.size(); ++i) {
                const auto kind = r.u64("State::load: layer header");
                check(kind == layers_[i].index(), "State::load: layer ", i, ": saved a ",
                      kind == 0 ? "mamba" : kind == 1 ? "attention" : "unknown", " state, the stack has ",
                      layers_[i].index() == 0 ? "mamba" : "attention");
                const auto nbytes = r.u64("State::load: layer header");
                check(nbytes <= r.remaining(), "State::load: layer ", i, ": truncated state (need ", nbytes,
                      " bytes, ", r.remaining(), " left)");
                const std::size_t before = r.remaining();
                try {
                    std::visit([&](auto& s) { s.load(r); }, layers_[i]);
                } catch (const error& e) {
                    fail("State::load: layer ", i, ": ", e.what());
                }
                check(before - r.remaining() == nbytes, "State::load: layer ", i, ": payload of ", nbytes,
                      " bytes, the layer read ", before - r.remaining());
            }
        }
        std::vector<LayerState> layers_;
        std::uint64_t tokens_ = 0;
    };

    BasicStack(const StackConfig& cfg, Schedule schedule) : cfg_(cfg), schedule_(std::move(schedule)) {
        cfg_.validate(schedule_);
        layers_.reserve(schedule_.size());
        for (std::size_t i = 0; i < schedule_.size(); ++i) {
            Layer l;
            l.kind = schedule_[i];
            if (l.kind.mixer == MixerKind::mamba)
                l.mamba = Layers::make_mamba(cfg_);
            else
                l.attention = Layers::make_attention(cfg_);
            if (l.kind.ff == FeedForwardKind::moe)
                l.moe = Layers::make_moe(cfg_);
            else
                l.dense = Layers::make_dense(cfg_);
            l.input_norm.resize(cfg_.d_model);
            l.pre_ff_norm.resize(cfg_.d_model);
            std::fill(l.input_norm.begin(), l.input_norm.end(), 1.0f);
            std::fill(l.pre_ff_norm.begin(), l.pre_ff_norm.end(), 1.0f);
            layers_.push_back(std::move(l));
        }
    }
    /// Run-time stack from an HF-style config: attention where i % attn_layer_period == attn_layer_offset.
    explicit BasicStack(const StackConfig& cfg)
        : BasicStack(cfg, Schedule::from_periods(cfg.num_layers, cfg.attn_layer_period ? cfg.attn_layer_period : 1,
                                                 cfg.attn_layer_offset, cfg.ff_schedule())) {
        check(cfg.attn_layer_period > 0, "Stack: attn_layer_period must be > 0 for a run-time stack");
    }
    BasicStack(BasicStack&&) noexcept = default;
    BasicStack& operator=(BasicStack&&) noexcept = default;

    const StackConfig& config() const { return cfg_; }
    /// The kind of every layer.
    const Schedule& schedule() const { return schedule_; }
    std::size_t num_layers() const { return layers_.size(); }
    std::size_t d_model() const { return cfg_.d_model; }

    Mamba* mamba(std::size_t i) { return layers_.at(i).mamba.get(); }
    Attention* attention(std::size_t i) { return layers_.at(i).attention.get(); }
    Dense* dense(std::size_t i) { return layers_.at(i).dense.get(); }
    MoE* moe(std::size_t i) { return layers_.at(i).moe.get(); }
    std::span<float> input_layernorm(std::size_t i) { return layers_.at(i).input_norm.span(); }
    std::span<float> pre_ff_layernorm(std::size_t i) { return layers_.at(i).pre_ff_norm.span(); }

    /// Weights with HF names relative to the model: "layers.{i}.mamba.in_proj.weight",
    /// "layers.{i}.self_attn.q_proj.weight", "layers.{i}.feed_forward.*",
    /// "layers.{i}.input_layernorm.weight", "layers.{i}.pre_ff_layernorm.weight".
    ParamList params() {
        ParamList out;
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            auto& l = layers_[i];
            const std::string p = "layers." + std::to_string(i) + ".";
            if (l.mamba) append_params(out, p + "mamba.", l.mamba->params());
            if (l.attention) append_params(out, p + "self_attn.", l.attention->params());
            if (l.dense) append_params(out, p + "feed_forward.", l.dense->params());
            if (l.moe) append_params(out, p + "feed_forward.", l.moe->params());
            out.push_back({p + "input_layernorm.weight", {cfg_.d_model}, l.input_norm.span()});
            out.push_back({p + "pre_ff_layernorm.weight", {cfg_.d_model}, l.pre_ff_norm.span()});
        }
        return out;
    }
    /// Tells every layer that offers it that its weights changed (e.g. Mamba's A = -exp(A_log)).
    void on_weights_loaded() {
        auto notify = [](auto* p) {
            if constexpr (detail::HasOnWeightsLoaded<std::remove_pointer_t<decltype(p)>>)
                if (p) p->on_weights_loaded();
        };
        for (auto& l : layers_) {
            notify(l.mamba.get());
            notify(l.attention.get());
            notify(l.dense.get());
            notify(l.moe.get());
        }
    }

    /// A fresh state for one sequence; global attention layers hold up to max_context tokens.
    State make_state(std::size_t max_context) const {
        State s;
        s.layers_.reserve(layers_.size());
        for (auto& l : layers_) {
            if (l.mamba)
                s.layers_.emplace_back(std::in_place_index<0>, l.mamba->make_state());
            else
                s.layers_.emplace_back(std::in_place_index<1>, l.attention->make_state(max_context));
        }
        return s;
    }

    /// Bytes of per-sequence state at `context_length` tokens, next to an all-attention stack of
    /// the same shape. KV: 2 (K and V) * kv_heads * head_dim * min(context, window) floats per
    /// attention layer; SSM: a Mamba layer's state (constant in the context).
    MemoryReport memory_report(std::size_t context_length) const {
        MemoryReport r;
        r.context_length = context_length;
        const std::size_t kv_layer = kv_bytes_per_layer(context_length);
        std::size_t ssm_layer = 0;
        for (auto& l : layers_)
            if (l.mamba) {
                ssm_layer = l.mamba->make_state().bytes();
                break;
            }
        r.attention_layers = schedule_.count(MixerKind::attention);
        r.mamba_layers = schedule_.count(MixerKind::mamba);
        r.kv_bytes = r.attention_layers * kv_layer;
        r.ssm_bytes = r.mamba_layers * ssm_layer;
        r.total_bytes = r.kv_bytes + r.ssm_bytes;
        r.all_attention_kv_bytes = layers_.size() * kv_layer;
        return r;
    }
    std::size_t kv_bytes_per_layer(std::size_t context_length) const {
        const std::size_t heads = cfg_.num_attention_heads ? cfg_.num_attention_heads : 1;
        const std::size_t kv_heads = cfg_.num_key_value_heads ? cfg_.num_key_value_heads : heads;
        const std::size_t head_dim = cfg_.d_model / heads;
        return cfg_.sliding_window ? WindowKVCache::bytes_for(cfg_.sliding_window, kv_heads, head_dim)
                                   : KVCache::bytes_for(context_length, kv_heads, head_dim);
    }

    /// Runs L tokens through every layer: x [L, d_model] is the residual stream, updated in place.
    template <Executor Exec>
    void prefill(MatrixView<float> x, State& st, Exec& exec) {
        check_shape("Stack::prefill: x", x, any, cfg_.d_model);
        check_state(st, "Stack::prefill");
        const std::size_t L = x.rows, d = cfg_.d_model;
        if (L == 0) return;
        MatrixView<float> h(h_.get(L * d), L, d), y(y_.get(L * d), L, d);
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            auto& l = layers_[i];
            norm_rows(x, l.input_norm.data(), h, exec);
            if (l.mamba)
                l.mamba->prefill(MatrixView<const float>(h), std::get<0>(st.layers_[i]), y, exec);
            else
                l.attention->prefill(MatrixView<const float>(h), std::get<1>(st.layers_[i]), y, exec);
            add_rows(x, y, exec);
            norm_rows(x, l.pre_ff_norm.data(), h, exec);
            if (l.moe)
                l.moe->prefill(MatrixView<const float>(h), y, exec);
            else
                l.dense->prefill(MatrixView<const float>(h), y, exec);
            add_rows(x, y, exec);
        }
        st.tokens_ += L;
    }

    /// One token: x [d_model], the residual stream, updated in place. No allocation once warm.
    template <Executor Exec>
    void step(std::span<float> x, State& st, Exec& exec) {
        check_size("Stack::step: x", x, cfg_.d_model);
        check_state(st, "Stack::step");
        const std::size_t d = cfg_.d_model;
        std::span<float> h(h_.get(d), d), y(y_.get(d), d);
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            auto& l = layers_[i];
            kernels::rmsnorm_row(x.data(), l.input_norm.data(), h.data(), d, cfg_.rms_norm_eps);
            if (l.mamba)
                l.mamba->step(std::span<const float>(h), std::get<0>(st.layers_[i]), y, exec);
            else
                l.attention->step(std::span<const float>(h), std::get<1>(st.layers_[i]), y, exec);
            for (std::size_t c = 0; c < d; ++c) x[c] += y[c];
            kernels::rmsnorm_row(x.data(), l.pre_ff_norm.data(), h.data(), d, cfg_.rms_norm_eps);
            if (l.moe)
                l.moe->step(std::span<const float>(h), y, exec);
            else
                l.dense->step(std::span<const float>(h), y, exec);
            for (std::size_t c = 0; c < d; ++c) x[c] += y[c];
        }
        st.tokens_ += 1;
    }

    /// One token for each of B independent sequences: x [B, d_model] (row b belongs to states[b]).
    template <Executor Exec>
    void step_batch(MatrixView<float> x, std::span<State* const> states, Exec& exec) {
        check_shape("Stack::step_batch: x", x, states.size(), cfg_.d_model);
        for (auto* s : states) {
            check(s != nullptr, "Stack::step_batch: null state");
            check_state(*s, "Stack::step_batch");
        }
        const std::size_t B = x.rows, d = cfg_.d_model;
        if (B == 0) return;
        MatrixView<float> h(h_.get(B * d), B, d), y(y_.get(B * d), B, d);
        if (ptr_capacity_ < B) {  // grow only: no allocation once warm
            mamba_ptrs_.reset(new MambaState*[B]);
            attn_ptrs_.reset(new AttentionState*[B]);
            ptr_capacity_ = B;
        }
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            auto& l = layers_[i];
            norm_rows(x, l.input_norm.data(), h, exec);
            if (l.mamba) {
                for (std::size_t b = 0; b < B; ++b) mamba_ptrs_[b] = &std::get<0>(states[b]->layers_[i]);
                l.mamba->step_batch(MatrixView<const float>(h), std::span<MambaState* const>(mamba_ptrs_.get(), B), y, exec);
            } else {
                for (std::size_t b = 0; b < B; ++b) attn_ptrs_[b] = &std::get<1>(states[b]->layers_[i]);
                l.attention->step_batch(MatrixView<const float>(h), std::span<AttentionState* const>(attn_ptrs_.get(), B), y,
                                        exec);
            }
            add_rows(x, y, exec);
            norm_rows(x, l.pre_ff_norm.data(), h, exec);
            if (l.moe)
                l.moe->prefill(MatrixView<const float>(h), y, exec);
            else
                l.dense->prefill(MatrixView<const float>(h), y, exec);
            add_rows(x, y, exec);
        }
        for (auto* s : states) s->tokens_ += 1;
    }

    /// Serial overloads.
    void prefill(MatrixView<float> x, State& st) {
        SerialExecutor s;
        prefill(x, st, s);
    }
    void step(std::span<float> x, State& st) {
        SerialExecutor s;
        step(x, st, s);
    }

private:
    struct Layer {
        LayerKind kind;
        std::unique_ptr<Mamba> mamba;
        std::unique_ptr<Attention> attention;
        std::unique_ptr<Dense> dense;
        std::unique_ptr<MoE> moe;
        Buffer<float> input_norm, pre_ff_norm;  // [d_model] RMSNorm weights
    };

    void check_state(const State& st, const char* who) const {
        check(st.layers_.size() == layers_.size(), who, ": state has ", st.layers_.size(), " layers, the stack has ",
              layers_.size(), " (make it with this stack's make_state)");
    }

    // h[r] = rmsnorm(x[r]) * w, rows split over threads (rows are independent).
    template <Executor Exec>
    void norm_rows(MatrixView<const float> x, const float* w, MatrixView<float> h, Exec& exec) const {
        const std::size_t d = cfg_.d_model;
        const float eps = cfg_.rms_norm_eps;
        if (x.rows < 64) {
            for (std::size_t r = 0; r < x.rows; ++r) kernels::rmsnorm_row(x.row(r), w, h.row(r), d, eps);
            return;
        }
        exec.parallel_for(x.rows, 32, [&](std::size_t b, std::size_t e) {
            for (std::size_t r = b; r < e; ++r) kernels::rmsnorm_row(x.row(r), w, h.row(r), d, eps);
        });
    }
    // x += y, row by row.
    template <Executor Exec>
    void add_rows(MatrixView<float> x, MatrixView<const float> y, Exec& exec) const {
        const std::size_t d = cfg_.d_model;
        auto body = [&](std::size_t b, std::size_t e) {
            for (std::size_t r = b; r < e; ++r) {
                float* xr = x.row(r);
                const float* yr = y.row(r);
                for (std::size_t c = 0; c < d; ++c) xr[c] += yr[c];
            }
        };
        if (x.rows < 64)
            body(0, x.rows);
        else
            exec.parallel_for(x.rows, 32, body);
    }

    StackConfig cfg_;
    Schedule schedule_;
    std::vector<Layer> layers_;
    detail::Scratch h_, y_;
    std::unique_ptr<MambaState*[]> mamba_ptrs_;  // per-layer state pointers of a batch
    std::unique_ptr<AttentionState*[]> attn_ptrs_;
    std::size_t ptr_capacity_ = 0;
};

/// A run-time stack of Jamba layers (any HF Jamba config).
using Stack = BasicStack<JambaLayers>;

/// A compile-time hybrid stack: Ratio = std::ratio<A, P>, A attention layers in every period of P
/// layers (placed by Placement, Jamba's middle-of-period by default), Mamba elsewhere; the
/// feed-forward schedule comes from the config. HybridStack<std::ratio<1, 8>> is Jamba's block.
/// A config whose attn_layer_period/offset describe a different layout throws hystack::error.
template <class Ratio, class Placement = JambaPlacement, class Layers = JambaLayers>
class HybridStack : public BasicStack<Layers> {
public:
    using ratio = RatioSchedule<Ratio, Placement>;
    static constexpr std::size_t attention_per_period = ratio::attention_per_period;
    static constexpr std::size_t period = ratio::period;
    /// Mixer of layer i, known at compile time.
    static constexpr MixerKind mixer(std::size_t layer) { return ratio::mixer(layer); }

    explicit HybridStack(const StackConfig& cfg) : BasicStack<Layers>(cfg, checked_schedule(cfg)) {}

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
