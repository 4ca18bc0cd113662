#pragma once
// Tiny layers with the layer-kind contract (stack/kinds.hpp), registered under the built-in kinds'
// names (for stack/persistence tests independent of the real kernels): a recurrent "mamba"
// (h = a*h + W x), a causal-mean "attention" over a KV-like cache, and linear+tanh feed-forwards.
#include <hystack/stack.hpp>

#include <cmath>
#include <memory>
#include <vector>

namespace toy {
using namespace hystack;

struct RecState {
    Buffer<float> h;
    std::size_t bytes() const { return h.bytes(); }
    void reset() { h.zero(); }
    void save(ByteWriter& w) const { w.f32(h.span()); }
    void load(ByteReader& r) { r.f32(h.span(), "RecState"); }
};
struct CacheState {
    Matrix<float> rows;  // [capacity, d]
    std::size_t len = 0;
    std::size_t length() const { return len; }
    std::size_t bytes() const { return rows.bytes(); }
    void reset() { len = 0; }
    void save(ByteWriter& w) const {
        w.u64(rows.rows());
        w.u64(len);
        w.f32(std::span<const float>(rows.data(), len * rows.cols()));
    }
    void load(ByteReader& r) {
        const auto cap = r.u64("CacheState");
        check(cap == rows.rows(), "CacheState: capacity ", cap, ", expected ", rows.rows());
        const auto n = r.u64("CacheState");
        check(n <= cap, "CacheState: length ", n, " exceeds capacity ", cap);
        len = n;
        r.f32(std::span<float>(rows.data(), len * rows.cols()), "CacheState");
    }
};

struct Rec {
    using State = RecState;
    std::size_t d;
    Matrix<float> W;
    explicit Rec(std::size_t d_) : d(d_), W(d_, d_) {}
    ParamList params() { return {{"w.weight", {d, d}, W.span()}}; }
    State make_state() const {
        State s;
        s.h.resize(d);
        return s;
    }
    void one(const float* x, State& st, float* y) const {
        for (std::size_t i = 0; i < d; ++i) {
            float acc = 0;
            for (std::size_t j = 0; j < d; ++j) acc += W(i, j) * x[j];
            st.h[i] = 0.5f * st.h[i] + acc;
            y[i] = st.h[i];
        }
    }
    template <Executor E>
    void prefill(MatrixView<const float> x, State& st, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t r = 0; r < x.rows; ++r) one(x.row(r), st, y.row(r));
    }
    template <Executor E>
    void prefill(MatrixView<const float> x, State& st, MatrixView<float> y, E& e) const {
        Workspace ws;
        prefill(x, st, y, ws, e);
    }
    template <Executor E>
    void step_batch(MatrixView<const float> x, std::span<State* const> s, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t b = 0; b < x.rows; ++b) one(x.row(b), *s[b], y.row(b));
    }
};

struct Att {
    using State = CacheState;
    std::size_t d;
    Matrix<float> Wq;
    std::size_t kv_bytes_per_token, window;  // what a real KV cache of the config's shape would hold
    explicit Att(const StackConfig& c)
        : d(c.d_model), Wq(c.d_model, c.d_model), kv_bytes_per_token(2 * c.num_key_value_heads * c.head_dim() * 4),
          window(c.sliding_window) {}
    static constexpr bool caches_tokens = true;
    std::size_t state_bytes(std::size_t context) const { return kv_bytes_per_token * (window ? window : context); }
    ParamList params() { return {{"q_proj.weight", {d, d}, Wq.span()}}; }
    State make_state(std::size_t max_context) const {
        State s;
        s.rows.resize(max_context, d);
        return s;
    }
    void one(const float* x, State& st, float* y) const {
        check(st.len < st.rows.rows(), "KVCache: sequence of ", st.len + 1, " tokens exceeds capacity ", st.rows.rows());
        std::copy(x, x + d, st.rows.row(st.len++));
        for (std::size_t i = 0; i < d; ++i) {
            float m = 0;
            for (std::size_t t = 0; t < st.len; ++t) m += st.rows(t, i);
            float q = 0;
            for (std::size_t j = 0; j < d; ++j) q += Wq(i, j) * x[j];
            y[i] = q + m / float(st.len);
        }
    }
    template <Executor E>
    void prefill(MatrixView<const float> x, State& st, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t r = 0; r < x.rows; ++r) one(x.row(r), st, y.row(r));
    }
    template <Executor E>
    void prefill(MatrixView<const float> x, State& st, MatrixView<float> y, E& e) const {
        Workspace ws;
        prefill(x, st, y, ws, e);
    }
    template <Executor E>
    void step_batch(MatrixView<const float> x, std::span<State* const> s, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t b = 0; b < x.rows; ++b) one(x.row(b), *s[b], y.row(b));
    }
};

struct FF {
    std::size_t d;
    Matrix<float> W;
    std::string name;
    FF(std::size_t d_, std::string n) : d(d_), W(d_, d_), name(std::move(n)) {}
    ParamList params() { return {{name, {d, d}, W.span()}}; }
    template <Executor E>
    void forward(MatrixView<const float> x, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t r = 0; r < x.rows; ++r)
            for (std::size_t i = 0; i < d; ++i) {
                float acc = 0;
                for (std::size_t j = 0; j < d; ++j) acc += W(i, j) * x(r, j);
                y(r, i) = std::tanh(acc);
            }
    }
    template <Executor E>
    void prefill(MatrixView<const float> x, MatrixView<float> y, E& e) const {
        Workspace ws;
        forward(x, y, ws, e);
    }
};

/// The toy layers under the built-in kinds' names and HF module names.
inline const KindRegistry& kinds() {
    static const KindRegistry r = [] {
        KindRegistry k;
        k.add_mixer_type<Rec>(hystack::kinds::mamba1, "mamba", [](const StackConfig& c, std::size_t) { return c.d_model; });
        k.add_mixer_type<Att>(hystack::kinds::attention, "self_attn", [](const StackConfig& c, std::size_t) { return c; });
        k.add_feed_forward(hystack::kinds::dense, "feed_forward", [](const StackConfig& c, std::size_t) {
            return std::unique_ptr<FeedForward>(std::make_unique<FeedForwardOf<FF>>(hystack::kinds::dense, c.d_model, "down_proj.weight"));
        });
        k.add_feed_forward(hystack::kinds::moe, "feed_forward", [](const StackConfig& c, std::size_t) {
            return std::unique_ptr<FeedForward>(std::make_unique<FeedForwardOf<FF>>(hystack::kinds::moe, c.d_model, "router.weight"));
        });
        return k;
    }();
    return r;
}

/// Stacks of toy layers.
struct Stack : hystack::Stack {
    explicit Stack(const StackConfig& c) : hystack::Stack(c, kinds()) {}
};
template <class R, class P = JambaPlacement>
struct Hybrid : HybridStack<R, P> {
    explicit Hybrid(const StackConfig& c) : HybridStack<R, P>(c, kinds()) {}
};

inline StackConfig config(std::size_t layers = 8, std::size_t d = 8) {
    StackConfig c;
    c.d_model = d;
    c.num_layers = layers;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.intermediate_size = 16;
    c.num_experts = 4;
    c.num_experts_per_tok = 2;
    return c;
}

}  // namespace toy
