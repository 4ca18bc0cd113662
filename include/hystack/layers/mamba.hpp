#pragma once
#include "../core/module.hpp"

// Mamba-1 mixer (state-spaces/mamba's Mamba block, HuggingFace's JambaMambaMixer):
//   (x, z) = in_proj(h)                     x, z [L, d_inner]
//   x = silu(causal_conv1d(x) + conv_bias)  depthwise, width d_conv, continuing from the conv state
//   (dt, B, C) = x_proj(x)                  [L, dt_rank], [L, d_state], [L, d_state]
//   Jamba only: dt, B, C = RMSNorm(dt), RMSNorm(B), RMSNorm(C)   (dt/b/c_layernorm, eps = rms_norm_eps)
//   delta = dt_proj.weight dt               (dt_proj.bias is added inside the scan, before softplus)
//   y = selective_scan(x, delta, A = -exp(A_log), B, C, D, z)   continuing from the ssm state
//   out = out_proj(y)

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../core/bytes.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/math.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"
#include "../kernels/causal_conv1d.hpp"
#include "../core/weight.hpp"
#include "../kernels/project.hpp"
#include "../kernels/rmsnorm.hpp"
#include "../kernels/selective_scan.hpp"

namespace hystack {

/// Shape of a Mamba-1 mixer. HF Jamba: d_inner = mamba_expand * hidden_size, d_state = mamba_d_state,
/// d_conv = mamba_d_conv, dt_rank = mamba_dt_rank, dt_bc_norm = true, conv_bias = mamba_conv_bias,
/// proj_bias = mamba_proj_bias. Plain Mamba (state-spaces/mamba): dt_bc_norm = false.
struct MambaConfig {
    std::size_t d_model = 0;
    std::size_t d_inner = 0;
    std::size_t d_state = 16;
    std::size_t d_conv = 4;
    std::size_t dt_rank = 0;
    bool dt_bc_norm = false;  // Jamba's RMSNorm on dt, B and C
    float rms_norm_eps = 1e-6f;
    bool conv_bias = true;
    bool proj_bias = false;  // in_proj / out_proj biases
    DType weights = DType::f32;  // element type of the weight matrices (one whose rows do not fit stays f32)
};

/// Per-sequence state of a Mamba mixer: the conv state (the last d_conv-1 inputs of the convolution, token-major
/// [d_conv-1, d_inner], oldest first; HF keeps [d_inner, d_conv] holding one more, unused, column) and the ssm state
/// h [d_inner, d_state]. A value type: copying forks the sequence.
class MambaState {
public:
    MambaState() = default;
    MambaState(std::size_t d_inner, std::size_t d_state, std::size_t d_conv)
        : conv_(d_conv ? d_conv - 1 : 0, d_inner), ssm_(d_inner, d_state), d_conv_(d_conv) {}

    /// conv state [d_conv-1, d_inner]: the last d_conv-1 conv inputs, oldest first (last row: the newest token).
    MatrixView<float> conv() { return conv_.view(); }
    MatrixView<const float> conv() const { return conv_.view(); }
    /// ssm state [d_inner, d_state].
    MatrixView<float> ssm() { return ssm_.view(); }
    MatrixView<const float> ssm() const { return ssm_.view(); }

    std::size_t d_inner() const { return ssm_.rows(); }
    std::size_t d_state() const { return ssm_.cols(); }
    std::size_t d_conv() const { return d_conv_; }

    /// Bytes of state data (conv + ssm, fp32).
    std::size_t bytes() const { return conv_.bytes() + ssm_.bytes(); }
    /// Back to the state of a new sequence (zeros).
    void reset() {
        conv_.zero();
        ssm_.zero();
    }
    void save(ByteWriter& w) const {
        w.u64(d_inner());
        w.u64(d_state());
        w.u64(d_conv_);
        w.f32(conv_.span());
        w.f32(ssm_.span());
    }
    /// Reads a state written by save(); its dimensions must match this state's.
    void load(ByteReader& r) {
        const std::uint64_t d = r.u64("MambaState"), n = r.u64("MambaState"), k = r.u64("MambaState");
        check(d == d_inner() && n == d_state() && k == d_conv_, "MambaState: expected d_inner ", d_inner(), ", d_state ",
              d_state(), ", d_conv ", d_conv_, "; got ", d, ", ", n, ", ", k);
        r.f32(conv_.span(), "MambaState: conv state");
        r.f32(ssm_.span(), "MambaState: ssm state");
    }

private:
    Matrix<float> conv_;  // [d_conv-1, d_inner]
    Matrix<float> ssm_;   // [d_inner, d_state]
    std::size_t d_conv_ = 0;
};

/// Mamba-1 mixer with weights under HuggingFace names (params()). Derived data: A = -exp(A_log), computed by
/// on_weights_loaded(): call it after changing weights. The calls that take a Workspace are const: they read the
/// weights and write only the state and the caller's workspace, so one mixer serves any number of threads, each with
/// its own workspace; the calls without one use the mixer's own workspace (one caller at a time). Workspaces only
/// grow, so step/step_batch allocate nothing once warmed up.
class MambaMixer {
public:
    using State = MambaState;
    using Config = MambaConfig;
    /// Scratch of one caller: xz, xc, dbl, delta, y for up to prefill_chunk rows.
    struct Work {
        Buffer<float> buf;
    };

    explicit MambaMixer(const MambaConfig& cfg) : cfg_(cfg) {
        check(cfg.d_model > 0 && cfg.d_inner > 0, "MambaMixer: d_model and d_inner must be positive, got ", cfg.d_model,
              " and ", cfg.d_inner);
        check(cfg.d_conv >= 1, "MambaMixer: d_conv must be at least 1, got ", cfg.d_conv);
        check(cfg.dt_rank > 0, "MambaMixer: dt_rank must be positive, got ", cfg.dt_rank);
        const std::size_t di = cfg.d_inner, N = cfg.d_state;
        in_proj_w_ = Weight(2 * di, cfg.d_model, fitting_type(cfg.weights, cfg.d_model));
        if (cfg.proj_bias) in_proj_b_.resize(2 * di);
        conv_w_.resize(di, cfg.d_conv);
        if (cfg.conv_bias) conv_b_.resize(di);
        x_proj_w_ = Weight(cfg.dt_rank + 2 * N, di, fitting_type(cfg.weights, di));
        dt_proj_w_ = Weight(di, cfg.dt_rank, fitting_type(cfg.weights, cfg.dt_rank));
        dt_proj_b_.resize(di);
        A_log_.resize(di, N);
        D_.resize(di);
        out_proj_w_ = Weight(cfg.d_model, di, fitting_type(cfg.weights, di));
        if (cfg.proj_bias) out_proj_b_.resize(cfg.d_model);
        if (cfg.dt_bc_norm) {
            dt_norm_w_.resize(cfg.dt_rank);
            b_norm_w_.resize(N);
            c_norm_w_.resize(N);
        }
        A_.resize(di, N);
        refresh_A();
    }

    const MambaConfig& config() const { return cfg_; }

    /// Weights with HF names relative to the mixer module and HF shapes.
    ParamList params() {
        const std::size_t di = cfg_.d_inner, N = cfg_.d_state, R = cfg_.dt_rank, dm = cfg_.d_model;
        ParamList p;
        p.push_back(in_proj_w_.param("in_proj.weight", {2 * di, dm}));
        if (cfg_.proj_bias) p.push_back({"in_proj.bias", {2 * di}, in_proj_b_.span()});
        p.push_back({"conv1d.weight", {di, 1, cfg_.d_conv}, conv_w_.span()});
        if (cfg_.conv_bias) p.push_back({"conv1d.bias", {di}, conv_b_.span()});
        p.push_back(x_proj_w_.param("x_proj.weight", {R + 2 * N, di}));
        p.push_back(dt_proj_w_.param("dt_proj.weight", {di, R}));
        p.push_back({"dt_proj.bias", {di}, dt_proj_b_.span()});
        p.push_back({"A_log", {di, N}, A_log_.span()});
        p.push_back({"D", {di}, D_.span()});
        p.push_back(out_proj_w_.param("out_proj.weight", {dm, di}));
        if (cfg_.proj_bias) p.push_back({"out_proj.bias", {dm}, out_proj_b_.span()});
        if (cfg_.dt_bc_norm) {
            p.push_back({"dt_layernorm.weight", {R}, dt_norm_w_.span()});
            p.push_back({"b_layernorm.weight", {N}, b_norm_w_.span()});
            p.push_back({"c_layernorm.weight", {N}, c_norm_w_.span()});
        }
        return p;
    }

    /// Recomputes the derived A = -exp(A_log). Call after loading or changing weights.
    void on_weights_loaded() { refresh_A(); }

    /// A fresh (zero) state for one sequence.
    MambaState make_state() const { return MambaState(cfg_.d_inner, cfg_.d_state, cfg_.d_conv); }

    /// Bytes of weights (what a decode step reads).
    std::size_t weight_bytes() const {
        return in_proj_w_.bytes() + in_proj_b_.bytes() + conv_w_.bytes() + conv_b_.bytes() + x_proj_w_.bytes() +
               dt_proj_w_.bytes() + dt_proj_b_.bytes() + A_log_.bytes() + D_.bytes() + out_proj_w_.bytes() +
               out_proj_b_.bytes() + dt_norm_w_.bytes() + b_norm_w_.bytes() + c_norm_w_.bytes();
    }
    /// The own workspace's buffer (for tests: its address and size stay put once warmed up).
    const float* workspace_data() const { return own_.get<Work>().buf.data(); }
    std::size_t workspace_size() const { return own_.get<Work>().buf.size(); }

    /// Prefill: x [L, d_model] -> y [L, d_model] (written, not accumulated; y may be x itself), continuing the
    /// sequence in st. Long inputs go in chunks of prefill_chunk tokens, carrying the state, so scratch stays small.
    template <Executor Exec>
    void prefill(MatrixView<const float> x, MambaState& st, MatrixView<float> y, Workspace& ws, Exec& exec) const {
        check_shape("MambaMixer::prefill: x", x, any, cfg_.d_model);
        check_shape("MambaMixer::prefill: y", y, x.rows, cfg_.d_model);
        check_state("MambaMixer::prefill", st);
        for (std::size_t t0 = 0; t0 < x.rows; t0 += prefill_chunk) {
            const std::size_t n = std::min(prefill_chunk, x.rows - t0);
            Scratch s = scratch(ws, n);
            kernels::project(x.rows_slice(t0, n), in_proj_w_.view(), in_proj_b_.span(), s.xz, exec);
            // Conv and scan over the chunk's tokens, continuing the sequence.
            kernels::causal_conv1d(s.x_in(), conv_weight(), conv_b_.span(), st.conv(), s.xc, exec);
            finish_rows(s, exec);
            kernels::selective_scan(s.xc, s.delta, dt_proj_b_.span(), A_.view(), s.B(), s.C(), D_.span(), s.z(),
                                    st.ssm(), s.y, exec);
            kernels::project(s.y, out_proj_w_.view(), out_proj_b_.span(), y.rows_slice(t0, n), exec);
        }
    }
    template <Executor Exec>
    void prefill(MatrixView<const float> x, MambaState& st, MatrixView<float> y, Exec& exec) {
        prefill(x, st, y, own_, exec);
    }
    void prefill(MatrixView<const float> x, MambaState& st, MatrixView<float> y) {
        SerialExecutor serial;
        prefill(x, st, y, own_, serial);
    }

    /// One decode step: x [d_model] -> y [d_model] (y may be x), updating st. No allocation once warmed up.
    template <Executor Exec>
    void step(std::span<const float> x, MambaState& st, std::span<float> y, Workspace& ws, Exec& exec) const {
        check_size("MambaMixer::step: x", x, cfg_.d_model);
        check_size("MambaMixer::step: y", y, cfg_.d_model);
        MambaState* const states[1] = {&st};
        step_batch(MatrixView<const float>(x.data(), 1, x.size()), std::span<MambaState* const>(states, 1),
                   MatrixView<float>(y.data(), 1, y.size()), ws, exec);
    }
    template <Executor Exec>
    void step(std::span<const float> x, MambaState& st, std::span<float> y, Exec& exec) {
        step(x, st, y, own_, exec);
    }
    void step(std::span<const float> x, MambaState& st, std::span<float> y) {
        SerialExecutor serial;
        step(x, st, y, own_, serial);
    }

    /// n_seq independent sequences, one token each: x [n_seq, d_model] -> y [n_seq, d_model], states[b] for row b.
    /// Projections run batched (weights read once for all B); conv and scan per sequence. No allocation once
    /// warmed up with a batch at least this large.
    template <Executor Exec>
    void step_batch(MatrixView<const float> x, std::span<MambaState* const> states, MatrixView<float> y, Workspace& ws,
                    Exec& exec) const {
        check_shape("MambaMixer::step_batch: x", x, any, cfg_.d_model);
        check_shape("MambaMixer::step_batch: y", y, x.rows, cfg_.d_model);
        check(states.size() == x.rows, "MambaMixer::step_batch: states: expected ", x.rows, " (one per row of x), got ",
              states.size());
        for (std::size_t b = 0; b < states.size(); ++b) {
            check(states[b] != nullptr, "MambaMixer::step_batch: states[", b, "] is null");
            check_state("MambaMixer::step_batch", *states[b]);
        }
        const std::size_t n_seq = x.rows;
        if (n_seq == 0) return;
        Scratch s = scratch(ws, n_seq);
        kernels::project(x, in_proj_w_.view(), in_proj_b_.span(), s.xz, exec);
        auto conv_one = [&](std::size_t b, auto& ex) {
            kernels::causal_conv1d_step(std::span<const float>(s.xz.row(b), cfg_.d_inner), conv_weight(), conv_b_.span(),
                                        states[b]->conv(), s.xc.row_span(b), ex);
        };
        per_sequence(n_seq, exec, conv_one);
        finish_rows(s, exec);
        const std::size_t di = cfg_.d_inner, N = cfg_.d_state, R = cfg_.dt_rank;
        auto scan_one = [&](std::size_t b, auto& ex) {
            const float* dbl = s.dbl.row(b);
            kernels::selective_scan_step(std::span<const float>(s.xc.row(b), di), std::span<const float>(s.delta.row(b), di),
                                         dt_proj_b_.span(), A_.view(), std::span<const float>(dbl + R, N),
                                         std::span<const float>(dbl + R + N, N), D_.span(),
                                         std::span<const float>(s.xz.row(b) + di, di), states[b]->ssm(),
                                         s.y.row_span(b), ex);
        };
        per_sequence(n_seq, exec, scan_one);
        kernels::project(s.y, out_proj_w_.view(), out_proj_b_.span(), y, exec);
    }

    template <Executor Exec>
    void step_batch(MatrixView<const float> x, std::span<MambaState* const> states, MatrixView<float> y, Exec& exec) {
        step_batch(x, states, y, own_, exec);
    }
    void step_batch(MatrixView<const float> x, std::span<MambaState* const> states, MatrixView<float> y) {
        SerialExecutor serial;
        step_batch(x, states, y, own_, serial);
    }

    /// Tokens per prefill chunk (bounds the scratch space: about 10 * d_inner floats per token).
    static constexpr std::size_t prefill_chunk = 256;

private:
    // Views of the scratch buffer for n rows (tokens or sequences).
    struct Scratch {
        std::size_t di = 0;
        MatrixView<float> xz, xc, dbl, delta, y;  // [n, 2 d_inner], [n, d_inner], [n, R + 2N], [n, d_inner], [n, d_inner]
        std::size_t R = 0, N = 0;
        MatrixView<const float> x_in() const { return xz.cols_slice(0, di); }
        MatrixView<const float> z() const { return xz.cols_slice(di, di); }
        MatrixView<const float> B() const { return dbl.cols_slice(R, N); }
        MatrixView<const float> C() const { return dbl.cols_slice(R + N, N); }
    };

    Scratch scratch(Workspace& ws, std::size_t n) const {
        const std::size_t di = cfg_.d_inner, N = cfg_.d_state, R = cfg_.dt_rank;
        const std::size_t row = 5 * di + R + 2 * N;
        Buffer<float>& buf = ws.get<Work>().buf;
        if (buf.size() < n * row) buf.resize(n * row);
        float* p = buf.data();
        Scratch s;
        s.di = di;
        s.R = R;
        s.N = N;
        auto take = [&](std::size_t cols) {
            MatrixView<float> v(p, n, cols);
            p += n * cols;
            return v;
        };
        s.xz = take(2 * di);
        s.xc = take(di);
        s.dbl = take(R + 2 * N);
        s.delta = take(di);
        s.y = take(di);
        return s;
    }

    MatrixView<const float> conv_weight() const { return {conv_w_.data(), cfg_.d_inner, cfg_.d_conv}; }

    // After the conv: x_proj, Jamba's norms, dt_proj (without bias: the scan adds it before softplus).
    template <Executor Exec>
    void finish_rows(Scratch& s, Exec& exec) const {
        const std::size_t N = cfg_.d_state, R = cfg_.dt_rank;
        kernels::project(s.xc, x_proj_w_.view(), {}, s.dbl, exec);
        if (cfg_.dt_bc_norm) {
            const float eps = cfg_.rms_norm_eps;
            for (std::size_t t = 0; t < s.dbl.rows; ++t) {
                float* r = s.dbl.row(t);
                kernels::rmsnorm_row(r, dt_norm_w_.data(), r, R, eps);
                kernels::rmsnorm_row(r + R, b_norm_w_.data(), r + R, N, eps);
                kernels::rmsnorm_row(r + R + N, c_norm_w_.data(), r + R + N, N, eps);
            }
        }
        kernels::project(s.dbl.cols_slice(0, R), dt_proj_w_.view(), {}, s.delta, exec);
    }

    // Runs fn(b, executor) for each sequence: one sequence uses the executor inside the kernel (threads split
    // channels); several run one per task (threads split sequences). Per channel the arithmetic is the same.
    template <Executor Exec, class F>
    static void per_sequence(std::size_t n, Exec& exec, F& fn) {
        if (n == 1) {
            fn(0, exec);
            return;
        }
        exec.parallel_for(n, 1, [&](std::size_t b0, std::size_t b1) {
            SerialExecutor serial;
            for (std::size_t b = b0; b < b1; ++b) fn(b, serial);
        });
    }

    void check_state(const char* fn, const MambaState& st) const {
        check(st.d_inner() == cfg_.d_inner && st.d_state() == cfg_.d_state && st.d_conv() == cfg_.d_conv, fn,
              ": state: expected d_inner ", cfg_.d_inner, ", d_state ", cfg_.d_state, ", d_conv ", cfg_.d_conv, "; got ",
              st.d_inner(), ", ", st.d_state(), ", ", st.d_conv(), " (make it with make_state())");
    }

    // A = -exp(A_log)
    void refresh_A() {
        math::exp(std::span<const float>(A_log_.span()), A_.span());
        for (auto& v : A_.span()) v = -v;
    }

    MambaConfig cfg_;
    Weight in_proj_w_;          // [2 d_inner, d_model]
    Buffer<float> in_proj_b_;   // [2 d_inner] or empty
    Matrix<float> conv_w_;      // [d_inner, d_conv] (HF [d_inner, 1, d_conv])
    Buffer<float> conv_b_;      // [d_inner] or empty
    Weight x_proj_w_;           // [dt_rank + 2 d_state, d_inner]
    Weight dt_proj_w_;          // [d_inner, dt_rank]
    Buffer<float> dt_proj_b_;   // [d_inner]
    Matrix<float> A_log_;       // [d_inner, d_state]
    Buffer<float> D_;           // [d_inner]
    Weight out_proj_w_;         // [d_model, d_inner]
    Buffer<float> out_proj_b_;  // [d_model] or empty
    Buffer<float> dt_norm_w_, b_norm_w_, c_norm_w_;  // [dt_rank], [d_state], [d_state] (Jamba)
    Matrix<float> A_;           // [d_inner, d_state] = -exp(A_log)
    mutable Workspace own_;     // the workspace of the calls that take none
};

}  // namespace hystack
