#pragma once
#include "../core/module.hpp"

#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"
#include "../core/weight.hpp"
#include "../kernels/project.hpp"
#include "stateless.hpp"

namespace hystack {

struct SwiGLUConfig {
    std::size_t d_model = 0;
    std::size_t hidden = 0;  // HF intermediate_size
    DType weights = DType::f32;  // element type of the weight matrices (one whose rows do not fit stays f32)
};

/// Dense SwiGLU MLP (HF JambaMLP / LlamaMLP): y = down(silu(gate x) * up x), no biases.
/// Weights: "gate_proj.weight", "up_proj.weight" [hidden, d_model], "down_proj.weight" [d_model, hidden].
/// Stateless: forward() reads only the weights and the caller's workspace (h [L, hidden], grown on
/// demand, so a step allocates nothing once a call of at least its size has run).
class SwiGLU : public StatelessLayer<SwiGLU> {
public:
    static constexpr const char* name = "SwiGLU";
    /// Scratch of one caller: h [L, hidden].
    struct Work {
        Buffer<float> h;
    };

    explicit SwiGLU(const SwiGLUConfig& cfg)
        : cfg_(cfg),
          gate_(cfg.hidden, cfg.d_model, fitting_type(cfg.weights, cfg.d_model)),
          up_(cfg.hidden, cfg.d_model, fitting_type(cfg.weights, cfg.d_model)),
          down_(cfg.d_model, cfg.hidden, fitting_type(cfg.weights, cfg.hidden)) {
        check(cfg.d_model > 0 && cfg.hidden > 0, "SwiGLU: d_model and hidden must be positive, got ", cfg.d_model, ", ",
              cfg.hidden);
        own_workspace().get<Work>().h.resize(cfg.hidden);  // one token: the convenience step never allocates
    }

    const SwiGLUConfig& config() const { return cfg_; }

    ParamList params() {
        return {gate_.param("gate_proj.weight", {cfg_.hidden, cfg_.d_model}),
                up_.param("up_proj.weight", {cfg_.hidden, cfg_.d_model}),
                down_.param("down_proj.weight", {cfg_.d_model, cfg_.hidden})};
    }
    MatrixView<float> gate_proj() { return gate_.f32(); }
    MatrixView<float> up_proj() { return up_.f32(); }
    MatrixView<float> down_proj() { return down_.f32(); }

    /// y = down(silu(gate x) * up x) for x [L, d_model]; y [L, d_model] (written, must not alias x).
    template <Executor Exec>
    void forward(MatrixView<const float> x, MatrixView<float> y, Workspace& ws, Exec& exec) const {
        check_shape("SwiGLU: x", x, any, cfg_.d_model);
        check_shape("SwiGLU: y", y, x.rows, cfg_.d_model);
        if (x.rows == 0) return;
        Buffer<float>& hb = ws.get<Work>().h;
        if (hb.size() < x.rows * cfg_.hidden) hb.resize(x.rows * cfg_.hidden);
        MatrixView<float> h(hb.data(), x.rows, cfg_.hidden);  // h [L, hidden]
        kernels::project_swiglu(x, gate_.view(), up_.view(), h, exec);
        kernels::project(h, down_.view(), {}, y, exec);
    }

    /// Bytes held by the own workspace (the convenience entry points').
    std::size_t workspace_bytes() const { return own_workspace().get<Work>().h.bytes(); }

private:
    SwiGLUConfig cfg_;
    Weight gate_, up_, down_;  // gate, up [hidden, d_model]; down [d_model, hidden]
};

}  // namespace hystack
