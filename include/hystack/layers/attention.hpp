#pragma once
#include "../core/module.hpp"

// Attention layer (HF LlamaAttention / JambaAttention shape): q, k, v projections, optional RoPE,
// causal or sliding-window softmax attention over the cache with GQA, output projection.

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

#include "../core/error.hpp"
#include "../core/layout.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"
#include "../kernels/attention.hpp"
#include "../kernels/kv_cache.hpp"
#include "../core/weight.hpp"
#include "../kernels/project.hpp"
#include "../kernels/rope.hpp"

namespace hystack {

struct AttentionConfig {
    std::size_t d_model = 0;
    std::size_t n_heads = 0;
    std::size_t n_kv_heads = 0;  // 0 = n_heads
    std::size_t head_dim = 0;    // 0 = d_model / n_heads
    std::size_t window = 0;      // sliding window W (0 = global causal)
    bool qkv_bias = false;       // q_proj/k_proj/v_proj.bias
    bool o_bias = false;         // o_proj.bias
    bool rope = false;           // rotary embedding (rotate-half) on q and k; Jamba uses none
    double rope_theta = 10000.0;
    float scale = 0.0f;          // 0 = 1 / sqrt(head_dim)
    DType weights = DType::f32;  // element type of the weight matrices (one whose rows do not fit stays f32)
};

/// Multi-head attention with grouped-query heads, weights under HF names (q_proj, k_proj, v_proj, o_proj
/// [+ .bias]). State: AttentionCache (make_state). The calls that take a Workspace are const (weights are only
/// read; scratch lives in the caller's workspace), so one layer serves any number of threads; the calls without
/// one use the layer's own workspace (one caller at a time). Workspaces only grow: step/step_batch allocate
/// nothing once warmed up with a batch this large.
class AttentionLayer {
public:
    using State = AttentionCache;
    using Config = AttentionConfig;
    /// Scratch of one caller: q, k, v and the attention output, the kernels' workspace, and the
    /// per-sequence positions and key views of a batched step.
    struct Work {
        Buffer<float> qkv;
        kernels::AttentionWorkspace kernel;
        std::vector<std::size_t> pos;
        std::vector<kernels::KVView> kvs;
    };

    explicit AttentionLayer(AttentionConfig cfg) : cfg_(resolve(cfg)) {
        const std::size_t dm = cfg_.d_model, qd = cfg_.n_heads * cfg_.head_dim, kd = cfg_.n_kv_heads * cfg_.head_dim;
        q_w_ = Weight(qd, dm, fitting_type(cfg.weights, dm));
        k_w_ = Weight(kd, dm, fitting_type(cfg.weights, dm));
        v_w_ = Weight(kd, dm, fitting_type(cfg.weights, dm));
        o_w_ = Weight(dm, qd, fitting_type(cfg.weights, qd));
        if (cfg_.qkv_bias) {
            q_b_.resize(qd);
            k_b_.resize(kd);
            v_b_.resize(kd);
        }
        if (cfg_.o_bias) o_b_.resize(dm);
    }

    const AttentionConfig& config() const { return cfg_; }
    kernels::AttentionDims dims() const { return {cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim, cfg_.window, cfg_.scale}; }

    /// Weights with HF names relative to the attention module and HF shapes.
    ParamList params() {
        const std::size_t dm = cfg_.d_model, qd = cfg_.n_heads * cfg_.head_dim, kd = cfg_.n_kv_heads * cfg_.head_dim;
        ParamList p;
        p.push_back(q_w_.param("q_proj.weight", {qd, dm}));
        if (cfg_.qkv_bias) p.push_back({"q_proj.bias", {qd}, q_b_.span()});
        p.push_back(k_w_.param("k_proj.weight", {kd, dm}));
        if (cfg_.qkv_bias) p.push_back({"k_proj.bias", {kd}, k_b_.span()});
        p.push_back(v_w_.param("v_proj.weight", {kd, dm}));
        if (cfg_.qkv_bias) p.push_back({"v_proj.bias", {kd}, v_b_.span()});
        p.push_back(o_w_.param("o_proj.weight", {dm, qd}));
        if (cfg_.o_bias) p.push_back({"o_proj.bias", {dm}, o_b_.span()});
        return p;
    }

    /// A fresh cache for one sequence: global: a KVCache of max_context positions; sliding window: a ring of
    /// W slots (max_context unused: any length fits).
    AttentionCache make_state(std::size_t max_context) const {
        if (cfg_.window) return AttentionCache(WindowKVCache(cfg_.window, cfg_.n_kv_heads, cfg_.head_dim));
        return AttentionCache(KVCache(max_context, cfg_.n_kv_heads, cfg_.head_dim));
    }

    /// The state grows with the context (a KV cache); its bytes at context_length tokens, without allocating.
    static constexpr bool caches_tokens = true;
    std::size_t state_bytes(std::size_t context_length) const {
        return cfg_.window ? WindowKVCache::bytes_for(cfg_.window, cfg_.n_kv_heads, cfg_.head_dim)
                           : KVCache::bytes_for(context_length, cfg_.n_kv_heads, cfg_.head_dim);
    }

    std::size_t weight_bytes() const {
        return q_w_.bytes() + k_w_.bytes() + v_w_.bytes() + o_w_.bytes() + q_b_.bytes() + k_b_.bytes() + v_b_.bytes() + o_b_.bytes();
    }
    /// The own workspace's buffers (for tests: addresses and sizes stay put once warmed up).
    const float* workspace_data() const { return own_.get<Work>().qkv.data(); }
    std::size_t workspace_size() const { return own_.get<Work>().qkv.size(); }
    const float* kernel_workspace_data() const { return own_.get<Work>().kernel.data(); }

    /// Prefill: x [L, d_model] -> y [L, d_model] (written; y may be x), continuing the sequence in st.
    template <Executor Exec>
    void prefill(MatrixView<const float> x, AttentionCache& st, MatrixView<float> y, Workspace& ws, Exec& exec) const {
        check_shape("AttentionLayer::prefill: x", x, any, cfg_.d_model);
        check_shape("AttentionLayer::prefill: y", y, x.rows, cfg_.d_model);
        check_state("AttentionLayer::prefill", st);
        const std::size_t L = x.rows, past = st.length();
        st.check_append(L);
        if (L == 0) return;
        Work& w = ws.get<Work>();
        Views s = views(w, L);
        project(x, s, exec);
        if (cfg_.rope) {
            kernels::rope(s.q, cfg_.n_heads, cfg_.head_dim, past, cfg_.rope_theta);
            kernels::rope(s.k, cfg_.n_kv_heads, cfg_.head_dim, past, cfg_.rope_theta);
        }
        // Keys: the cache's positions, then this call's L new ones (appended once attention has read them,
        // so a ring cache never overwrites a key a query of this call still needs).
        kernels::KVView kv = st.view();
        kv.add({past, L, s.k.data, s.v.data, s.k.stride});
        kernels::attention(MatrixView<const float>(s.q), past, kv, s.att, dims(), w.kernel, exec);
        st.append(s.k, s.v);
        kernels::project(s.att, o_w_.view(), o_b_.span(), y, exec);
    }
    template <Executor Exec>
    void prefill(MatrixView<const float> x, AttentionCache& st, MatrixView<float> y, Exec& exec) {
        prefill(x, st, y, own_, exec);
    }
    void prefill(MatrixView<const float> x, AttentionCache& st, MatrixView<float> y) {
        SerialExecutor serial;
        prefill(x, st, y, own_, serial);
    }

    /// One decode step: x [d_model] -> y [d_model] (y may be x). No allocation once warmed up.
    template <Executor Exec>
    void step(std::span<const float> x, AttentionCache& st, std::span<float> y, Workspace& ws, Exec& exec) const {
        check_size("AttentionLayer::step: x", x, cfg_.d_model);
        check_size("AttentionLayer::step: y", y, cfg_.d_model);
        AttentionCache* states[1] = {&st};
        step_batch(MatrixView<const float>(x.data(), 1, x.size()), std::span<AttentionCache* const>(states, 1),
                   MatrixView<float>(y.data(), 1, y.size()), ws, exec);
    }
    template <Executor Exec>
    void step(std::span<const float> x, AttentionCache& st, std::span<float> y, Exec& exec) {
        step(x, st, y, own_, exec);
    }
    void step(std::span<const float> x, AttentionCache& st, std::span<float> y) {
        SerialExecutor serial;
        step(x, st, y, own_, serial);
    }

    /// n_seq independent sequences, one token each: x [n_seq, d_model] -> y [n_seq, d_model] (y may be x), states[b] for
    /// row b. Projections run batched; attention splits (sequence, key chunk) over threads.
    template <Executor Exec>
    void step_batch(MatrixView<const float> x, std::span<AttentionCache* const> states, MatrixView<float> y, Workspace& ws,
                    Exec& exec) const {
        check_shape("AttentionLayer::step_batch: x", x, any, cfg_.d_model);
        check_shape("AttentionLayer::step_batch: y", y, x.rows, cfg_.d_model);
        check(states.size() == x.rows, "AttentionLayer::step_batch: states: expected ", x.rows, " (one per row of x), got ",
              states.size());
        const std::size_t n_seq = x.rows;
        for (std::size_t b = 0; b < n_seq; ++b) {
            check(states[b] != nullptr, "AttentionLayer::step_batch: null state");
            check_state("AttentionLayer::step_batch", *states[b]);
            states[b]->check_append(1);
        }
        if (n_seq == 0) return;
        Work& w = ws.get<Work>();
        Views s = views(w, n_seq);
        project(x, s, exec);
        if (w.pos.size() < n_seq) {
            w.pos.resize(n_seq);
            w.kvs.resize(n_seq);
        }
        for (std::size_t b = 0; b < n_seq; ++b) {
            const std::size_t p = states[b]->length();
            if (cfg_.rope) {
                kernels::rope(s.q.rows_slice(b, 1), cfg_.n_heads, cfg_.head_dim, p, cfg_.rope_theta);
                kernels::rope(s.k.rows_slice(b, 1), cfg_.n_kv_heads, cfg_.head_dim, p, cfg_.rope_theta);
            }
            w.pos[b] = p;
            w.kvs[b] = states[b]->view();
            w.kvs[b].add({p, 1, s.k.row(b), s.v.row(b), s.k.stride});
        }
        kernels::attention_decode(MatrixView<const float>(s.q), std::span<const std::size_t>(w.pos.data(), n_seq),
                                  std::span<const kernels::KVView>(w.kvs.data(), n_seq), s.att, dims(), w.kernel, exec);
        for (std::size_t b = 0; b < n_seq; ++b) states[b]->append(s.k.rows_slice(b, 1), s.v.rows_slice(b, 1));
        kernels::project(s.att, o_w_.view(), o_b_.span(), y, exec);
    }
    template <Executor Exec>
    void step_batch(MatrixView<const float> x, std::span<AttentionCache* const> states, MatrixView<float> y, Exec& exec) {
        step_batch(x, states, y, own_, exec);
    }

private:
    struct Views {
        MatrixView<float> q, k, v, att;  // [n, H*d], [n, Hk*d], [n, Hk*d], [n, H*d]
    };

    static AttentionConfig resolve(AttentionConfig c) {
        check(c.d_model > 0 && c.n_heads > 0, "AttentionLayer: d_model and n_heads must be positive, got ", c.d_model, " and ",
              c.n_heads);
        if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
        if (c.head_dim == 0) {
            check(c.d_model % c.n_heads == 0, "AttentionLayer: d_model (", c.d_model, ") is not a multiple of n_heads (", c.n_heads,
                  "); give head_dim");
            c.head_dim = attention_head_dim(c.d_model, c.n_heads);
        }
        check(c.n_heads % c.n_kv_heads == 0, "AttentionLayer: n_heads (", c.n_heads, ") must be a multiple of n_kv_heads (",
              c.n_kv_heads, ")");
        check(!c.rope || c.head_dim % 2 == 0, "AttentionLayer: rope needs an even head_dim, got ", c.head_dim);
        return c;
    }

    void check_state(const char* who, const AttentionCache& st) const {
        check(st.is_window() == (cfg_.window != 0), who, ": cache is ", st.is_window() ? "a window" : "a global",
              " cache, the layer is ", cfg_.window ? "sliding-window" : "global", " (make it with make_state())");
        std::size_t nkv = 0, d = 0, w = 0;
        if (const auto* g = st.global()) {
            nkv = g->n_kv_heads();
            d = g->head_dim();
        } else if (const auto* r = st.ring()) {
            nkv = r->n_kv_heads();
            d = r->head_dim();
            w = r->window();
        }
        check(nkv == cfg_.n_kv_heads && d == cfg_.head_dim && w == cfg_.window, who, ": cache [kv heads ", nkv, ", head_dim ", d,
              ", window ", w, "] does not match the layer [", cfg_.n_kv_heads, ", ", cfg_.head_dim, ", ", cfg_.window,
              "] (make it with make_state())");
    }

    Views views(Work& w, std::size_t n) const {
        const std::size_t qd = cfg_.n_heads * cfg_.head_dim, kd = cfg_.n_kv_heads * cfg_.head_dim;
        const std::size_t need = n * (2 * qd + 2 * kd);
        if (w.qkv.size() < need) w.qkv.resize(need);
        float* p = w.qkv.data();
        Views s;
        s.q = {p, n, qd};
        s.k = {p + n * qd, n, kd};
        s.v = {p + n * (qd + kd), n, kd};
        s.att = {p + n * (qd + 2 * kd), n, qd};
        return s;
    }

    template <Executor Exec>
    void project(MatrixView<const float> x, Views& s, Exec& exec) const {
        kernels::project(x, q_w_.view(), q_b_.span(), s.q, exec);
        kernels::project(x, k_w_.view(), k_b_.span(), s.k, exec);
        kernels::project(x, v_w_.view(), v_b_.span(), s.v, exec);
    }

    AttentionConfig cfg_;
    Weight q_w_, k_w_, v_w_, o_w_;  // q [H d, d_model], k, v [Hk d, d_model], o [d_model, H d]
    Buffer<float> q_b_, k_b_, v_b_, o_b_;
    mutable Workspace own_;  // the workspace of the calls that take none
};

}  // namespace hystack
