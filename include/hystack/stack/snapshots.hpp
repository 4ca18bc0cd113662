#pragma once
#include "../core/module.hpp"

// Snapshots of a per-sequence state every N tokens, for rolling generation back: a recurrent
// (Mamba) state cannot be "truncated" like a KV cache, so rollback = restore the newest snapshot
// at or before the target position and re-feed the tokens after it.

#include <cstddef>
#include <deque>
#include <utility>

#include "../core/error.hpp"

namespace hystack {

/// Keeps copies of a State (any type with length() and copy) taken every `every` tokens, at most
/// `max_snapshots` of them (0 = unbounded; the oldest are dropped first).
template <class State>
class Snapshots {
public:
    explicit Snapshots(std::size_t every, std::size_t max_snapshots = 0) : every_(every), max_(max_snapshots) {
        check(every > 0, "Snapshots: expected a period of at least 1 token, got 0");
    }

    std::size_t every() const { return every_; }
    std::size_t size() const { return snaps_.size(); }
    bool empty() const { return snaps_.empty(); }
    /// Bytes held by the snapshots.
    std::size_t bytes() const {
        std::size_t n = 0;
        for (auto& s : snaps_) n += s.bytes();
        return n;
    }

    /// Call after feeding tokens to `st`: stores a copy when st.length() entered a new multiple of
    /// `every` since the newest snapshot (the first one at >= `every` tokens).
    /// Returns true when it stored one.
    bool maybe_save(const State& st) {
        const std::size_t n = st.length();
        const std::size_t last = snaps_.empty() ? 0 : snaps_.back().length();
        if (n <= last || n / every_ <= last / every_) return false;
        save(st);
        return true;
    }
    /// Stores a copy unconditionally (e.g. after the prompt).
    void save(const State& st) {
        drop_after(st.length());
        while (!snaps_.empty() && snaps_.back().length() == st.length()) snaps_.pop_back();
        snaps_.push_back(st);
        if (max_ && snaps_.size() > max_) snaps_.pop_front();
    }
    /// The newest snapshot with length() <= n, or nullptr.
    const State* at_or_before(std::size_t n) const {
        for (auto it = snaps_.rbegin(); it != snaps_.rend(); ++it)
            if (it->length() <= n) return &*it;
        return nullptr;
    }
    /// Forgets snapshots past n tokens (after rolling back to n).
    void drop_after(std::size_t n) {
        while (!snaps_.empty() && snaps_.back().length() > n) snaps_.pop_back();
    }
    void clear() { snaps_.clear(); }

private:
    std::size_t every_, max_;
    std::deque<State> snaps_;
};

}  // namespace hystack
