#pragma once
#include "../core/module.hpp"

// The per-sequence state of a stack: one LayerState per mixer (owned by the mixer's kind), the
// number of tokens seen, and the caller's workspace. A value type: copying forks the sequence.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/bytes.hpp"
#include "../core/error.hpp"
#include "../core/workspace.hpp"
#include "kinds.hpp"

namespace hystack {

class Stack;

/// Per-sequence state of a stack (make it with Stack::make_state). Copying forks the sequence (the
/// copy gets an empty workspace of its own); save()/load() use a versioned, size-checked byte format
/// in which every layer is tagged with its kind's name.
class StackState {
public:
    static constexpr std::uint64_t magic = 0x5441545354534848ull;  // "HHSTSTAT" little-endian
    // 3: layers tagged by kind name (2 tagged them by a variant index; 1 held K rows, not tiles)
    static constexpr std::uint64_t version = 3;
    static constexpr std::uint64_t max_kind_name = 256;

    StackState() = default;
    StackState(const StackState& o) : tokens_(o.tokens_) {
        layers_.reserve(o.layers_.size());
        for (auto& l : o.layers_) layers_.push_back(l ? l->clone() : nullptr);
    }
    StackState& operator=(const StackState& o) {
        if (this != &o) {
            StackState tmp(o);
            layers_ = std::move(tmp.layers_);
            tokens_ = o.tokens_;
        }
        return *this;
    }
    StackState(StackState&&) noexcept = default;
    StackState& operator=(StackState&&) noexcept = default;

    /// Tokens seen by this sequence.
    std::size_t length() const { return std::size_t(tokens_); }
    std::size_t num_layers() const { return layers_.size(); }
    /// Bytes of cache and state data (KV caches + recurrent states).
    std::size_t bytes() const {
        std::size_t n = 0;
        for (auto& l : layers_)
            if (l) n += l->bytes();
        return n;
    }
    /// Starts a new sequence (keeps the allocations).
    void reset() {
        for (auto& l : layers_)
            if (l) l->reset();
        tokens_ = 0;
    }
    /// Layer i's state; throws for a block without a mixer.
    LayerState& layer(std::size_t i) { return checked(i); }
    const LayerState& layer(std::size_t i) const { return const_cast<StackState*>(this)->checked(i); }
    /// Layer i's state as its kind's own type S (e.g. MambaState, AttentionCache); throws on another type.
    template <class S>
    S& layer_as(std::size_t i) {
        auto* p = dynamic_cast<StateOf<S>*>(&checked(i));
        check(p != nullptr, "State: layer ", i, " holds a '", checked(i).kind(), "' state, not the type asked for");
        return p->get();
    }
    /// This caller's scratch space (not copied, not saved).
    Workspace& workspace() { return ws_; }

    /// Format v3: u64 magic, u64 version, u64 layers, u64 tokens, then per layer: u64 kind name
    /// length, the name's bytes (empty: a block without a mixer), u64 payload bytes, payload (the
    /// layer state's own save()).
    void save(ByteWriter& w) const {
        w.u64(magic);
        w.u64(version);
        w.u64(layers_.size());
        w.u64(tokens_);
        std::vector<std::byte> payload;
        for (auto& l : layers_) {
            const std::string kind = l ? l->kind() : std::string();
            w.u64(kind.size());
            w.raw(kind.data(), kind.size());
            payload.clear();
            ByteWriter pw(payload);
            if (l) l->save(pw);
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
    /// Restores a state saved by save() into this one, which must come from the same stack shape
    /// (make_state with a capacity that fits). Checks the header, every layer's kind and sizes, and
    /// that nothing trails; on error throws hystack::error and leaves *this as it was.
    void load(ByteReader& r) {
        StackState tmp = *this;
        tmp.load_in_place(r);
        *this = std::move(tmp);
    }
    /// load() from a whole buffer, which must hold nothing after the state.
    void from_bytes(std::span<const std::byte> bytes) {
        ByteReader r(bytes);
        StackState tmp = *this;
        tmp.load_in_place(r);
        check(r.remaining() == 0, "State::load: ", r.remaining(), " trailing bytes after the state");
        *this = std::move(tmp);
    }

private:
    friend class Stack;

    LayerState& checked(std::size_t i) {
        check(i < layers_.size(), "State: layer ", i, " out of range (", layers_.size(), " layers)");
        check(layers_[i] != nullptr, "State: layer ", i, " has no mixer, so no state");
        return *layers_[i];
    }

    void load_in_place(ByteReader& r) {
        const auto m = r.u64("State::load: header");
        check(m == magic, "State::load: not a hystack state (bad magic)");
        const auto v = r.u64("State::load: header");
        check(v == version, "State::load: unsupported state format version ", v, " (this build reads ", version, ")");
        const auto n = r.u64("State::load: header");
        check(n == layers_.size(), "State::load: state has ", n, " layers, the stack has ", layers_.size());
        tokens_ = r.u64("State::load: header");
        for (std::size_t i = 0; i < layers_.size(); ++i) {
            const std::string want = layers_[i] ? layers_[i]->kind() : std::string();
            const auto name_len = r.u64("State::load: layer header");
            check(name_len <= max_kind_name, "State::load: layer ", i, ": kind name of ", name_len, " bytes (at most ",
                  max_kind_name, ")");
            check(name_len <= r.remaining(), "State::load: layer ", i, ": truncated state (kind name of ", name_len,
                  " bytes, ", r.remaining(), " left)");
            std::string kind(std::size_t(name_len), '\0');
            r.raw(kind.data(), kind.size(), "State::load: layer header");
            check(kind == want, "State::load: layer ", i, ": saved a '", kind, "' state, the stack has '", want, "'");
            const auto nbytes = r.u64("State::load: layer header");
            check(nbytes <= r.remaining(), "State::load: layer ", i, ": truncated state (need ", nbytes, " bytes, ",
                  r.remaining(), " left)");
            const std::size_t before = r.remaining();
            try {
                if (layers_[i]) layers_[i]->load(r);
            } catch (const error& e) {
                fail("State::load: layer ", i, ": ", e.what());
            }
            check(before - r.remaining() == nbytes, "State::load: layer ", i, ": payload of ", nbytes,
                  " bytes, the layer read ", before - r.remaining());
        }
    }

    std::vector<std::unique_ptr<LayerState>> layers_;  // [layers], null where a block has no mixer
    std::uint64_t tokens_ = 0;
    Workspace ws_;
};

}  // namespace hystack
