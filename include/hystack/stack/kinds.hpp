#pragma once
#include "../core/module.hpp"

// Layer kinds: the run-time contract between a stack and its layers. A block of the stack holds a
// Mixer (a token mixer with per-sequence state: Mamba, attention, ...) and/or a FeedForward (dense
// SwiGLU, MoE, ...); each sequence holds one LayerState per mixer. The stack's loop calls only these
// interfaces, so a new kind is a new layer type plus one KindRegistry::add_* call: MixerOf<L> and
// FeedForwardOf<L> adapt any layer type that has the contract below.
//
// Mixer layer contract (L):
//   using State = ...;                       copyable; bytes(), reset(), save(ByteWriter&), load(ByteReader&)
//   ParamList params();                      HF names relative to the layer's module
//   State make_state(std::size_t max_context) const;   (or make_state() for a state of fixed size)
//   void prefill(x [L, d], State&, y [L, d], Workspace&, ExecutorRef&) const;
//   void step_batch(x [n_seq, d], std::span<State* const>, y [n_seq, d], Workspace&, ExecutorRef&) const;
//   optional: void on_weights_loaded();  std::size_t state_bytes(std::size_t context) const;
//             static constexpr bool caches_tokens  (state grows with the context, as a KV cache)
// Feed-forward layer contract (L): ParamList params();
//   void forward(x [L, d], y [L, d], Workspace&, ExecutorRef&) const;  optional on_weights_loaded().

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/bytes.hpp"
#include "../core/error.hpp"
#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/view.hpp"
#include "../core/workspace.hpp"
#include "config.hpp"

namespace hystack {

/// Per-sequence state of one mixer layer, tagged with its kind's stable name (the saved format
/// writes it, so a state saved by a stack loads only into a layer of the same kind).
class LayerState {
public:
    virtual ~LayerState() = default;
    virtual const std::string& kind() const = 0;
    virtual std::unique_ptr<LayerState> clone() const = 0;
    /// Bytes of cache and state data.
    virtual std::size_t bytes() const = 0;
    /// Back to the state of a new sequence (keeps the allocations).
    virtual void reset() = 0;
    virtual void save(ByteWriter& w) const = 0;
    /// Reads a state written by save(); its sizes must match this state's.
    virtual void load(ByteReader& r) = 0;
};

/// A LayerState holding a layer's own state type S.
template <class S>
class StateOf final : public LayerState {
public:
    StateOf(std::string kind, S s) : kind_(std::move(kind)), s_(std::move(s)) {}
    S& get() { return s_; }
    const S& get() const { return s_; }

    const std::string& kind() const override { return kind_; }
    std::unique_ptr<LayerState> clone() const override { return std::make_unique<StateOf>(*this); }
    std::size_t bytes() const override { return s_.bytes(); }
    void reset() override { s_.reset(); }
    void save(ByteWriter& w) const override { s_.save(w); }
    void load(ByteReader& r) override { s_.load(r); }

private:
    std::string kind_;
    S s_;
};

/// A token mixer: reads the weights, updates per-sequence state. The compute calls are const:
/// scratch lives in the caller's workspace.
class Mixer {
public:
    virtual ~Mixer() = default;
    virtual const std::string& kind() const = 0;
    virtual ParamList params() = 0;
    virtual void on_weights_loaded() {}
    /// A fresh state for one sequence of up to max_context tokens.
    virtual std::unique_ptr<LayerState> make_state(std::size_t max_context) const = 0;
    /// Bytes of one sequence's state at context_length tokens (without allocating it).
    virtual std::size_t state_bytes(std::size_t context_length) const = 0;
    /// True when the state grows with the context (a KV cache), false for a fixed-size recurrent state.
    virtual bool caches_tokens() const = 0;
    /// x [L, d_model] -> y [L, d_model], continuing the sequence in st.
    virtual void prefill(MatrixView<const float> x, LayerState& st, MatrixView<float> y, Workspace& ws,
                         ExecutorRef exec) const = 0;
    /// One token for each of n_seq sequences: x, y [n_seq, d_model], states[b] for row b.
    virtual void step_batch(MatrixView<const float> x, std::span<LayerState* const> states, MatrixView<float> y,
                            Workspace& ws, ExecutorRef exec) const = 0;
};

/// A feed-forward: y = f(x) row by row, no state.
class FeedForward {
public:
    virtual ~FeedForward() = default;
    virtual const std::string& kind() const = 0;
    virtual ParamList params() = 0;
    virtual void on_weights_loaded() {}
    /// x [L, d_model] -> y [L, d_model].
    virtual void forward(MatrixView<const float> x, MatrixView<float> y, Workspace& ws, ExecutorRef exec) const = 0;
};

namespace detail {
template <class S>
struct StatePointers {  // a batch's typed state pointers, grow-only
    std::vector<S*> v;
};
}  // namespace detail

namespace detail {
/// What both adapters share: the kind's name, the layer, its parameters and weight notification.
template <class Interface, class L>
class LayerAdapter : public Interface {
public:
    template <class... Args>
    explicit LayerAdapter(std::string kind, Args&&... args) : kind_(std::move(kind)), layer_(std::forward<Args>(args)...) {}

    L& layer() { return layer_; }
    const L& layer() const { return layer_; }

    const std::string& kind() const override { return kind_; }
    ParamList params() override { return layer_.params(); }
    void on_weights_loaded() override {
        if constexpr (requires(L& l) { l.on_weights_loaded(); }) layer_.on_weights_loaded();
    }

protected:
    std::string kind_;
    L layer_;
};
}  // namespace detail

/// Adapts a mixer layer type L (see the contract above) to Mixer.
template <class L>
class MixerOf final : public detail::LayerAdapter<Mixer, L> {
    using Base = detail::LayerAdapter<Mixer, L>;
    using Base::kind_;
    using Base::layer_;

public:
    using State = typename L::State;
    using Base::Base;

    std::unique_ptr<LayerState> make_state(std::size_t max_context) const override {
        if constexpr (requires(const L& l) { l.make_state(max_context); })
            return std::make_unique<StateOf<State>>(kind_, layer_.make_state(max_context));
        else
            return std::make_unique<StateOf<State>>(kind_, layer_.make_state());
    }
    std::size_t state_bytes(std::size_t context_length) const override {
        if constexpr (requires(const L& l) { l.state_bytes(context_length); })
            return layer_.state_bytes(context_length);
        else
            return make_state(context_length)->bytes();
    }
    bool caches_tokens() const override {
        if constexpr (requires { L::caches_tokens; })
            return L::caches_tokens;
        else
            return false;
    }
    void prefill(MatrixView<const float> x, LayerState& st, MatrixView<float> y, Workspace& ws,
                 ExecutorRef exec) const override {
        layer_.prefill(x, state_of(st), y, ws, exec);
    }
    void step_batch(MatrixView<const float> x, std::span<LayerState* const> states, MatrixView<float> y, Workspace& ws,
                    ExecutorRef exec) const override {
        auto& ptrs = ws.get<detail::StatePointers<State>>().v;
        if (ptrs.size() < states.size()) ptrs.resize(states.size());  // grow only: no allocation once warm
        for (std::size_t b = 0; b < states.size(); ++b) {
            check(states[b] != nullptr, kind_, " step_batch: states[", b, "] is null");
            ptrs[b] = &state_of(*states[b]);
        }
        layer_.step_batch(x, std::span<State* const>(ptrs.data(), states.size()), y, ws, exec);
    }

private:
    State& state_of(LayerState& s) const {
        auto* p = dynamic_cast<StateOf<State>*>(&s);
        if (!p) [[unlikely]]
            fail(kind_, ": given a '", s.kind(), "' state (make states with the stack's make_state)");
        return p->get();
    }
};

/// Adapts a feed-forward layer type L (see the contract above) to FeedForward.
template <class L>
class FeedForwardOf final : public detail::LayerAdapter<FeedForward, L> {
    using Base = detail::LayerAdapter<FeedForward, L>;
    using Base::layer_;

public:
    using Base::Base;

    void forward(MatrixView<const float> x, MatrixView<float> y, Workspace& ws, ExecutorRef exec) const override {
        layer_.forward(x, y, ws, exec);
    }
};

/// The layer kinds a stack can build, by name. Each kind has a factory (config, layer index) and
/// the HF module name its weights sit under in a decoder layer ("mamba", "self_attn", "feed_forward").
class KindRegistry {
public:
    using MixerFactory = std::function<std::unique_ptr<Mixer>(const StackConfig&, std::size_t layer)>;
    using FeedForwardFactory = std::function<std::unique_ptr<FeedForward>(const StackConfig&, std::size_t layer)>;

    /// Registers (or replaces) mixer kind `kind`.
    KindRegistry& add_mixer(std::string kind, std::string module, MixerFactory make) {
        check(!kind.empty(), "KindRegistry: a mixer kind needs a name");
        mixers_[std::move(kind)] = {std::move(module), std::move(make)};
        return *this;
    }
    /// Registers a mixer kind built from layer type L constructed as L(make_config(config, layer)).
    template <class L, class MakeConfig>
    KindRegistry& add_mixer_type(const std::string& kind, std::string module, MakeConfig make_config) {
        return add_mixer(kind, std::move(module), [kind, make_config](const StackConfig& c, std::size_t i) {
            return std::unique_ptr<Mixer>(std::make_unique<MixerOf<L>>(kind, make_config(c, i)));
        });
    }
    KindRegistry& add_feed_forward(std::string kind, std::string module, FeedForwardFactory make) {
        check(!kind.empty(), "KindRegistry: a feed-forward kind needs a name");
        ffs_[std::move(kind)] = {std::move(module), std::move(make)};
        return *this;
    }
    template <class L, class MakeConfig>
    KindRegistry& add_feed_forward_type(const std::string& kind, std::string module, MakeConfig make_config) {
        return add_feed_forward(kind, std::move(module), [kind, make_config](const StackConfig& c, std::size_t i) {
            return std::unique_ptr<FeedForward>(std::make_unique<FeedForwardOf<L>>(kind, make_config(c, i)));
        });
    }

    bool has_mixer(const std::string& kind) const { return mixers_.count(kind) != 0; }
    bool has_feed_forward(const std::string& kind) const { return ffs_.count(kind) != 0; }

    /// Builds mixer `kind` for layer `layer`; an unknown name throws, listing the known ones.
    std::unique_ptr<Mixer> make_mixer(const std::string& kind, const StackConfig& c, std::size_t layer) const {
        return entry(mixers_, kind, "mixer", layer).make(c, layer);
    }
    std::unique_ptr<FeedForward> make_feed_forward(const std::string& kind, const StackConfig& c, std::size_t layer) const {
        return entry(ffs_, kind, "feed-forward", layer).make(c, layer);
    }
    const std::string& mixer_module(const std::string& kind) const { return entry(mixers_, kind, "mixer", 0).module; }
    const std::string& feed_forward_module(const std::string& kind) const {
        return entry(ffs_, kind, "feed-forward", 0).module;
    }

private:
    template <class F>
    struct Entry {
        std::string module;
        F make;
    };
    template <class M>
    static const typename M::mapped_type& entry(const M& m, const std::string& kind, const char* what, std::size_t layer) {
        auto it = m.find(kind);
        if (it == m.end()) {
            std::string known;
            for (auto& [k, e] : m) known += (known.empty() ? "" : ", ") + k;
            fail("layer ", layer, ": unknown ", what, " kind '", kind, "' (known: ", known.empty() ? "none" : known, ")");
        }
        return it->second;
    }

    std::map<std::string, Entry<MixerFactory>> mixers_;
    std::map<std::string, Entry<FeedForwardFactory>> ffs_;
};

}  // namespace hystack
