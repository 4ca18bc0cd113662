#pragma once
#include "../core/module.hpp"

// Layer schedules of hybrid stacks: which layers mix with attention and which with Mamba, and
// which feed-forwards are mixtures of experts. Compile-time ratios (std::ratio<A, P>: A attention
// layers in every period of P) with a placement policy, and a run-time Schedule that any
// HuggingFace Jamba config (attn_layer_period/offset, expert_layer_period/offset) describes.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <ratio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/layout.hpp"

namespace hystack {

enum class MixerKind : std::uint8_t { mamba = 0, attention = 1 };
enum class FeedForwardKind : std::uint8_t { dense = 0, moe = 1 };

/// Names of the built-in layer kinds (stack/builtin_kinds.hpp registers them).
namespace kinds {
inline constexpr const char* mamba1 = "mamba1";        // Mamba-1 mixer (Jamba's, with its dt/B/C norms)
inline constexpr const char* attention = "attention";  // softmax attention with a KV cache
inline constexpr const char* dense = "dense";          // SwiGLU MLP
inline constexpr const char* moe = "moe";              // sparse mixture of SwiGLU experts
}  // namespace kinds

/// The kind name of a ratio schedule's mixer: "mamba1" or "attention".
inline const char* kind_name(MixerKind k) { return k == MixerKind::attention ? kinds::attention : kinds::mamba1; }
inline const char* kind_name(FeedForwardKind k) { return k == FeedForwardKind::moe ? kinds::moe : kinds::dense; }
inline const char* to_string(MixerKind k) { return k == MixerKind::attention ? "attention" : "mamba"; }
inline const char* to_string(FeedForwardKind k) { return k == FeedForwardKind::moe ? "moe" : "dense"; }

/// The kind of one block: its token mixer and its feed-forward, by kind name (see KindRegistry);
/// an empty name means the block has none (Nemotron-H's pattern gives single sub-layers).
struct LayerKind {
    std::string mixer = kinds::mamba1;
    std::string ff = kinds::dense;
    LayerKind() = default;
    LayerKind(std::string m, std::string f) : mixer(std::move(m)), ff(std::move(f)) {}
    LayerKind(MixerKind m, FeedForwardKind f) : mixer(kind_name(m)), ff(kind_name(f)) {}
    friend bool operator==(const LayerKind&, const LayerKind&) = default;
};

// --- placement policies ------------------------------------------------------------------------
// A placement policy says where the A attention layers of a period of P sit:
//   static constexpr bool is_attention(std::size_t offset_in_period, std::size_t A, std::size_t P);
// It must place exactly A of them (HybridStack static_asserts it).

/// Jamba's placement: the attention layers spread evenly from the middle of the period, offsets
/// (P/2 + floor(k*P/A)) mod P for k < A. A = 1 gives offset P/2 (layer 4 of 0..7 for 1:8), which
/// is HF Jamba's attn_layer_offset = 4 with attn_layer_period = 8.
struct JambaPlacement {
    static constexpr bool is_attention(std::size_t offset, std::size_t A, std::size_t P) {
        for (std::size_t k = 0; k < A; ++k)
            if ((P / 2 + k * P / A) % P == offset) return true;
        return false;
    }
};

/// Attention first: offsets 0 .. A-1 of each period.
struct FrontPlacement {
    static constexpr bool is_attention(std::size_t offset, std::size_t A, std::size_t /*P*/) { return offset < A; }
};

/// Attention last: offsets P-A .. P-1 of each period.
struct BackPlacement {
    static constexpr bool is_attention(std::size_t offset, std::size_t A, std::size_t P) { return offset + A >= P; }
};

namespace detail {
template <class Placement>
constexpr std::size_t count_attention(std::size_t A, std::size_t P) {
    std::size_t n = 0;
    for (std::size_t i = 0; i < P; ++i) n += Placement::is_attention(i, A, P) ? 1 : 0;
    return n;
}
}  // namespace detail

/// True when std::ratio-like R is a possible stack ratio: 0 <= A <= P attention layers per period.
template <class R>
inline constexpr bool is_valid_ratio = R::num >= 0 && R::num <= R::den;

/// Compile-time facts of a ratio: A attention layers per period of P (std::ratio reduces, so
/// std::ratio<2, 16> is 1:8). Rejects impossible ratios at compile time.
template <class Ratio, class Placement = JambaPlacement>
struct RatioSchedule {
    static_assert(Ratio::num >= 0, "HybridStack: the ratio A/P needs A >= 0 attention layers per period");
    static_assert(Ratio::num <= Ratio::den,
                  "HybridStack: a period of P layers cannot hold more than P attention layers (ratio A/P needs A <= P)");
    static constexpr std::size_t attention_per_period = std::size_t(Ratio::num);
    static constexpr std::size_t period = std::size_t(Ratio::den);
    static_assert(detail::count_attention<Placement>(attention_per_period, period) == attention_per_period,
                  "HybridStack: the placement policy must place exactly A attention layers in each period");
    static constexpr bool pure_mamba = attention_per_period == 0;
    static constexpr bool pure_attention = attention_per_period == period;

    /// Mixer of layer i (any i: the pattern repeats every `period` layers).
    static constexpr MixerKind mixer(std::size_t layer) {
        return Placement::is_attention(layer % period, attention_per_period, period) ? MixerKind::attention
                                                                                    : MixerKind::mamba;
    }
};

/// Feed-forward schedule: MoE on layers i with i % expert_layer_period == expert_layer_offset
/// (HF Jamba), dense SwiGLU elsewhere; num_experts <= 1 means dense everywhere.
struct FeedForwardSchedule {
    std::size_t expert_layer_period = 2;
    std::size_t expert_layer_offset = 1;
    std::size_t num_experts = 16;

    FeedForwardKind kind(std::size_t layer) const {
        if (num_experts <= 1) return FeedForwardKind::dense;
        return periodic(layer, expert_layer_period, expert_layer_offset) ? FeedForwardKind::moe : FeedForwardKind::dense;
    }
};

/// Run-time schedule: the kind of every block. From a compile-time ratio, from HF Jamba's
/// period/offset keys, from a pattern string (Nemotron-H's hybrid_override_pattern) or from an
/// explicit per-layer list (HF's layer_types / layers_block_type).
class Schedule {
public:
    Schedule() = default;
    explicit Schedule(std::vector<LayerKind> layers) : layers_(std::move(layers)) {}

    /// HF Jamba's rule: layer i is attention when i % attn_layer_period == attn_layer_offset.
    static Schedule from_periods(std::size_t num_layers, std::size_t attn_layer_period, std::size_t attn_layer_offset,
                                 const FeedForwardSchedule& ff) {
        check(attn_layer_period > 0, "Schedule: attn_layer_period must be > 0");
        check(ff.num_experts <= 1 || ff.expert_layer_period > 0, "Schedule: expert_layer_period must be > 0");
        std::vector<LayerKind> v(num_layers);
        for (std::size_t i = 0; i < num_layers; ++i)
            v[i] = {periodic(i, attn_layer_period, attn_layer_offset) ? MixerKind::attention : MixerKind::mamba, ff.kind(i)};
        return Schedule(std::move(v));
    }
    /// The schedule of a compile-time ratio over num_layers layers.
    template <class Ratio, class Placement = JambaPlacement>
    static Schedule from_ratio(std::size_t num_layers, const FeedForwardSchedule& ff) {
        std::vector<LayerKind> v(num_layers);
        for (std::size_t i = 0; i < num_layers; ++i) v[i] = {RatioSchedule<Ratio, Placement>::mixer(i), ff.kind(i)};
        return Schedule(std::move(v));
    }
    /// One block per character of `pattern`, looked up in `blocks` (e.g. Nemotron-H's "M-M*-" with
    /// 'M' -> {"mamba2", ""}, '-' -> {"", "mlp"}, '*' -> {"attention", ""}); an unknown character throws.
    static Schedule from_pattern(std::string_view pattern, const std::vector<std::pair<char, LayerKind>>& blocks) {
        std::vector<LayerKind> v;
        v.reserve(pattern.size());
        for (std::size_t i = 0; i < pattern.size(); ++i) {
            const LayerKind* k = nullptr;
            for (auto& [c, kind] : blocks)
                if (c == pattern[i]) k = &kind;
            if (!k) {
                std::string known;
                for (auto& [c, kind] : blocks) known += c;
                fail("Schedule: pattern character '", pattern[i], "' at position ", i, " is not one of \"", known, "\"");
            }
            v.push_back(*k);
        }
        return Schedule(std::move(v));
    }

    std::size_t size() const { return layers_.size(); }
    const LayerKind& operator[](std::size_t i) const { return layers_[i]; }
    const std::vector<LayerKind>& layers() const { return layers_; }
    auto begin() const { return layers_.begin(); }
    auto end() const { return layers_.end(); }

    /// Blocks whose mixer (or feed-forward) is `kind`.
    std::size_t count_mixer(std::string_view kind) const { return indices_of(&LayerKind::mixer, kind).size(); }
    std::size_t count_feed_forward(std::string_view kind) const { return indices_of(&LayerKind::ff, kind).size(); }
    std::vector<std::size_t> mixer_indices(std::string_view kind) const { return indices_of(&LayerKind::mixer, kind); }
    std::vector<std::size_t> feed_forward_indices(std::string_view kind) const { return indices_of(&LayerKind::ff, kind); }
    std::size_t count(MixerKind k) const { return count_mixer(kind_name(k)); }
    std::size_t count(FeedForwardKind k) const { return count_feed_forward(kind_name(k)); }
    /// Indices of the layers with mixer k, e.g. "{4, 12}".
    std::vector<std::size_t> indices(MixerKind k) const { return mixer_indices(kind_name(k)); }

    /// One letter per block: the mixer's ('m' mamba1, 'a' attention, otherwise its first letter; '-'
    /// none), upper case when the feed-forward is MoE ("mMmMaMmM..." reads: Mamba+dense, Mamba+MoE, ...).
    std::string compact() const {
        std::string s;
        for (auto& l : layers_) {
            char c = l.mixer.empty() ? '-' : l.mixer == kinds::mamba1 ? 'm' : l.mixer == kinds::attention ? 'a' : l.mixer[0];
            if (l.ff == kinds::moe && c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
            s += c;
        }
        return s;
    }
    /// Human-readable: "16 layers (mMmMaMmM...): attention at {4, 12}, mamba1 at {0, 1, ...}; moe at {1, 3, ...}, dense at {...}".
    std::string describe() const {
        auto list = [](const std::vector<std::size_t>& v) {
            std::string s = "{";
            for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
            return s + "}";
        };
        auto part = [&](std::string LayerKind::*field) {
            std::vector<std::string> names;
            for (auto& l : layers_)
                if (!(l.*field).empty() && std::find(names.begin(), names.end(), l.*field) == names.end())
                    names.push_back(l.*field);
            std::string s;
            for (auto& n : names) s += (s.empty() ? "" : ", ") + n + " at " + list(indices_of(field, n));
            return s.empty() ? std::string("none") : s;
        };
        return std::to_string(size()) + " layers (" + compact() + "): " + part(&LayerKind::mixer) + "; " +
               part(&LayerKind::ff);
    }

    friend bool operator==(const Schedule&, const Schedule&) = default;

private:
    std::vector<std::size_t> indices_of(std::string LayerKind::*field, std::string_view kind) const {
        std::vector<std::size_t> v;
        for (std::size_t i = 0; i < layers_.size(); ++i)
            if (layers_[i].*field == kind) v.push_back(i);
        return v;
    }

    std::vector<LayerKind> layers_;
};

}  // namespace hystack
