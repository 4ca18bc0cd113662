#pragma once
#include "../core/module.hpp"

#include <cstddef>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/view.hpp"

namespace hystack {

/// The serial and decode entry points of a layer without per-sequence state (SwiGLU, SparseMoE): a step
/// is a prefill of one row, a batched step a prefill of B independent rows. Derived (CRTP) provides
/// `prefill(x [L, d_model], y [L, d_model], exec)`, `config().d_model` and `static constexpr const char* name`,
/// and brings these in with `using StatelessLayer<Derived>::prefill;` (its own prefill hides them otherwise).
template <class Derived>
class StatelessLayer {
public:
    /// prefill on the calling thread.
    void prefill(MatrixView<const float> x, MatrixView<float> y) {
        SerialExecutor serial;
        self().prefill(x, y, serial);
    }

    /// One token: x, y [d_model].
    template <Executor Exec>
    void step(std::span<const float> x, std::span<float> y, Exec& exec) {
        const std::size_t d = self().config().d_model;
        if (x.size() != d || y.size() != d) [[unlikely]] {  // the messages are built only on failure: step never allocates
            check_size(std::string(Derived::name) + ": step x", x, d);
            check_size(std::string(Derived::name) + ": step y", y, d);
        }
        self().prefill(MatrixView<const float>(x.data(), 1, d), MatrixView<float>(y.data(), 1, d), exec);
    }
    void step(std::span<const float> x, std::span<float> y) {
        SerialExecutor serial;
        step(x, y, serial);
    }

    /// B independent tokens: x, y [B, d_model] (the same as prefill: no state).
    template <Executor Exec>
    void step_batch(MatrixView<const float> x, MatrixView<float> y, Exec& exec) {
        self().prefill(x, y, exec);
    }

private:
    Derived& self() { return static_cast<Derived&>(*this); }
};

}  // namespace hystack
