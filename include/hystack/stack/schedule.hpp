#pragma once
#include "../core/module.hpp"

// Layer schedules of hybrid stacks: which layers mix with attention and which with Mamba, and
// which feed-forwards are mixtures of experts. Compile-time ratios (std::ratio<A, P>: A attention
// layers in every period of P) with a placement policy, and a run-time Schedule that any
// HuggingFace Jamba config (attn_layer_period/offset, expert_layer_period/offset) describes.

#include <cstddef>
#include <cstdint>
#include <ratio>
#include <string>
#include <vector>

#include "../core/error.hpp"

namespace hystack {

enum class MixerKind : std::uint8_t { mamba = 0, attention = 1 };
enum class FeedForwardKind : std::uint8_t { dense = 0, moe = 1 };

inline const char* to_string(MixerKind k) { return k == MixerKind::attention ? "attention" : "mamba"; }
inline const char* to_string(FeedForwardKind k) { return k == FeedForwardKind::moe ? "moe" : "dense"; }

/// The kind of one decoder layer: its token mixer and its feed-forward.
struct LayerKind {
    MixerKind mixer = MixerKind::mamba;
    FeedForwardKind ff = FeedForwardKind::dense;
    friend constexpr bool operator==(const LayerKind&, const LayerKind&) = default;
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
        if (num_experts <= 1 || expert_layer_period == 0) return FeedForwardKind::dense;
        return layer % expert_layer_period == expert_layer_offset ? FeedForwardKind::moe : FeedForwardKind::dense;
    }
};

/// Run-time schedule: the kind of every layer.
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
            v[i] = {i % attn_layer_period == attn_layer_offset ? MixerKind::attention : MixerKind::mamba, ff.kind(i)};
        return Schedule(std::move(v));
    }
    /// The schedule of a compile-time ratio over num_layers layers.
    template <class Ratio, class Placement = JambaPlacement>
    static Schedule from_ratio(std::size_t num_layers, const FeedForwardSchedule& ff) {
        std::vector<LayerKind> v(num_layers);
        for (std::size_t i = 0; i < num_layers; ++i) v[i] = {RatioSchedule<Ratio, Placement>::mixer(i), ff.kind(i)};
        return Schedule(std::move(v));
    }

    std::size_t size() const { return layers_.size(); }
    const LayerKind& operator[](std::size_t i) const { return layers_[i]; }
    const std::vector<LayerKind>& layers() const { return layers_; }
    auto begin() const { return layers_.begin(); }
    auto end() const { return layers_.end(); }

    std::size_t count(MixerKind k) const {
        std::size_t n = 0;
        for (auto& l : layers_) n += l.mixer == k;
        return n;
    }
    std::size_t count(FeedForwardKind k) const {
        std::size_t n = 0;
        for (auto& l : layers_) n += l.ff == k;
        return n;
    }
    /// Indices of the layers with mixer k, e.g. "{4, 12}".
    std::vector<std::size_t> indices(MixerKind k) const {
        std::vector<std::size_t> v;
        for (std::size_t i = 0; i < layers_.size(); ++i)
            if (layers_[i].mixer == k) v.push_back(i);
        return v;
    }

    /// One letter per layer: M (Mamba) or A (attention), lower case when the feed-forward is dense
    /// ("mMmMAMmM..." reads: Mamba+dense, Mamba+MoE, ...). Upper case = MoE.
    std::string compact() const {
        std::string s;
        for (auto& l : layers_) {
            char c = l.mixer == MixerKind::attention ? 'a' : 'm';
            if (l.ff == FeedForwardKind::moe) c = char(c - 'a' + 'A');
            s += c;
        }
        return s;
    }
    /// Human-readable: "16 layers: attention at {4, 12}, mamba elsewhere; MoE at {1, 3, ...}".
    std::string describe() const {
        auto list = [](const std::vector<std::size_t>& v) {
            std::string s = "{";
            for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
            return s + "}";
        };
        std::vector<std::size_t> moe;
        for (std::size_t i = 0; i < layers_.size(); ++i)
            if (layers_[i].ff == FeedForwardKind::moe) moe.push_back(i);
        return std::to_string(size()) + " layers (" + compact() + "): attention at " +
               list(indices(MixerKind::attention)) + ", mamba elsewhere; MoE at " + list(moe) + ", dense SwiGLU elsewhere";
    }

    friend bool operator==(const Schedule&, const Schedule&) = default;

private:
    std::vector<LayerKind> layers_;
};

}  // namespace hystack
