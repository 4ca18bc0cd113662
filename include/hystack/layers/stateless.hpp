#pragma once
#include "../core/module.hpp"

#include <cstddef>
#include <span>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"

namespace hystack {

/// The convenience entry points of a layer without per-sequence state (SwiGLU, SparseMoE) used on its
/// own: prefill, step (a prefill of one row) and step_batch (a prefill of n_seq independent rows), all
/// through the layer's own workspace, so such a layer object serves one caller at a time. Derived
/// (CRTP) provides the shared, const path `forward(x [L, d_model], y [L, d_model], Workspace&, exec)`,
/// `config().d_model` and `static constexpr const char* name`; a stack calls forward with the
/// caller's workspace, so one layer object serves any number of threads.
template <class Derived>
class StatelessLayer {
public:
    template <Executor Exec>
    void prefill(MatrixView<const float> x, MatrixView<float> y, Exec& exec) {
        self().forward(x, y, own_, exec);
    }
    /// prefill on the calling thread.
    void prefill(MatrixView<const float> x, MatrixView<float> y) {
        SerialExecutor serial;
        prefill(x, y, serial);
    }

    /// One token: x, y [d_model].
    template <Executor Exec>
    void step(std::span<const float> x, std::span<float> y, Exec& exec) {
        const std::size_t d = self().config().d_model;
        check_size(ArgName{Derived::name, "step x"}, x, d);
        check_size(ArgName{Derived::name, "step y"}, y, d);
        prefill(MatrixView<const float>(x.data(), 1, d), MatrixView<float>(y.data(), 1, d), exec);
    }
    void step(std::span<const float> x, std::span<float> y) {
        SerialExecutor serial;
        step(x, y, serial);
    }

    /// n_seq independent tokens: x, y [n_seq, d_model] (the same as prefill: no state).
    template <Executor Exec>
    void step_batch(MatrixView<const float> x, MatrixView<float> y, Exec& exec) {
        prefill(x, y, exec);
    }

protected:
    /// The workspace of the convenience entry points.
    Workspace& own_workspace() const { return own_; }

private:
    Derived& self() { return static_cast<Derived&>(*this); }
    mutable Workspace own_;
};

}  // namespace hystack
