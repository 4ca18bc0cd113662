#pragma once
#include "module.hpp"

// Workspace: the scratch space of one caller. Layers and the stack keep no scratch of their own on
// the shared path: they ask the caller's workspace for it, so one loaded model serves any number of
// threads, each with its own workspace (a sequence state carries one).

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "view.hpp"

namespace hystack {

namespace detail {
template <class T>
inline constexpr char type_key = 0;  // &type_key<T> identifies T without RTTI

/// Floats that reallocate only to grow (so warm decode steps allocate nothing).
struct GrowBuffer {
    Buffer<float> buf;
    float* get(std::size_t n) {
        if (buf.size() < n) buf.resize(n);
        return buf.data();
    }
};
}  // namespace detail

/// Grow-only scratch objects, one per type: get<T>() returns this workspace's T, default-constructed
/// on first use and kept (with whatever it grew to) for later calls, so warm decode steps allocate
/// nothing. Users of a T must not overlap (one call at a time per workspace). A copy starts empty:
/// scratch is never shared, and copying a sequence state does not copy its scratch.
class Workspace {
public:
    Workspace() = default;
    Workspace(const Workspace&) noexcept {}
    Workspace& operator=(const Workspace&) noexcept { return *this; }
    Workspace(Workspace&&) noexcept = default;
    Workspace& operator=(Workspace&&) noexcept = default;

    template <class T>
    T& get() {
        const void* key = &detail::type_key<T>;
        for (auto& s : slots_)
            if (s.key == key) return *static_cast<T*>(s.ptr.get());
        slots_.push_back({key, Owned(new T(), [](void* p) { delete static_cast<T*>(p); })});
        return *static_cast<T*>(slots_.back().ptr.get());
    }
    /// Number of scratch objects held.
    std::size_t size() const { return slots_.size(); }

private:
    using Owned = std::unique_ptr<void, void (*)(void*)>;
    struct Slot {
        const void* key;
        Owned ptr;
    };
    std::vector<Slot> slots_;
};

}  // namespace hystack
