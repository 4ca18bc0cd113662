#pragma once
#include "../core/module.hpp"

// Token sampling from logits: greedy, temperature, top-k, top-p (nucleus), seeded and
// reproducible across platforms (std::mt19937_64 is fully specified; we turn its bits into a
// uniform float ourselves because std::uniform_real_distribution is implementation-defined).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "../core/error.hpp"

namespace hystack {


/// Sampling parameters. temperature 0 = greedy (argmax, lowest id on ties); top_k 0 = all
/// tokens; top_p 1 = no nucleus cut. Order as in llama.cpp/HF: temperature, top-k, top-p.
struct SamplingParams {
    float temperature = 1.0f;
    std::size_t top_k = 0;
    float top_p = 1.0f;
    std::uint64_t seed = 0;

    static SamplingParams greedy() { return {0.0f, 0, 1.0f, 0}; }
    void validate() const {
        check(std::isfinite(temperature) && temperature >= 0.0f, "SamplingParams: temperature must be >= 0, got ",
              temperature);
        check(top_p > 0.0f && top_p <= 1.0f, "SamplingParams: top_p must be in (0, 1], got ", top_p);
    }
};

/// Index of the largest logit (the lowest index among equal maxima; NaN never wins).
inline token_id argmax(std::span<const float> logits) {
    check(!logits.empty(), "argmax: empty logits");
    std::size_t best = 0;
    float bv = -std::numeric_limits<float>::infinity();
    bool found = false;
    for (std::size_t i = 0; i < logits.size(); ++i)
        if (!found ? !std::isnan(logits[i]) : logits[i] > bv) {
            best = i;
            bv = logits[i];
            found = true;
        }
    return token_id(best);
}

/// A seeded sampler. The same seed, parameters and logits give the same tokens on every run and
/// platform. Keeps scratch buffers: no allocation once warm for a given vocabulary size.
class Sampler {
public:
    explicit Sampler(const SamplingParams& p = {}) : p_(p), rng_(p.seed) { p.validate(); }

    const SamplingParams& params() const { return p_; }
    /// Restarts the random sequence from `seed`.
    void reseed(std::uint64_t seed) {
        p_.seed = seed;
        rng_.seed(seed);
    }

    /// Draws a token id from logits [vocab].
    token_id sample(std::span<const float> logits) {
        check(!logits.empty(), "Sampler: empty logits");
        if (p_.temperature == 0.0f || p_.top_k == 1) return argmax(logits);
        const std::size_t n = logits.size();
        // Candidates sorted by logit, descending (ties: lower id first, so the order is deterministic).
        idx_.resize(n);
        std::iota(idx_.begin(), idx_.end(), 0);
        const std::size_t k = p_.top_k && p_.top_k < n ? p_.top_k : n;
        auto better = [&](std::uint32_t a, std::uint32_t b) {
            const float la = std::isnan(logits[a]) ? -INFINITY : logits[a];
            const float lb = std::isnan(logits[b]) ? -INFINITY : logits[b];
            return la > lb || (la == lb && a < b);
        };
        // Plain temperature sampling needs no order: draw over the ids as they are.
        if (k < n)
            std::partial_sort(idx_.begin(), idx_.begin() + std::ptrdiff_t(k), idx_.end(), better);
        else if (p_.top_p < 1.0f)
            std::sort(idx_.begin(), idx_.end(), better);
        // Softmax of logits / T over the k candidates (in double: exact enough to be stable).
        prob_.resize(k);
        const double inv_t = 1.0 / double(p_.temperature);
        const float mx = logits[std::size_t(argmax(logits))];
        const double top = std::isfinite(mx) ? double(mx) : 0.0;
        double sum = 0;
        for (std::size_t i = 0; i < k; ++i) {
            const float l = logits[idx_[i]];
            prob_[i] = std::isnan(l) ? 0.0 : std::exp((double(l) - top) * inv_t);
            sum += prob_[i];
        }
        if (!(sum > 0)) return token_id(idx_[0]);
        // Nucleus: the smallest prefix whose probability reaches top_p (at least one token).
        std::size_t m = k;
        if (p_.top_p < 1.0f) {
            double cum = 0;
            for (std::size_t i = 0; i < k; ++i) {
                cum += prob_[i] / sum;
                if (cum >= double(p_.top_p)) {
                    m = i + 1;
                    break;
                }
            }
        }
        double total = 0;
        for (std::size_t i = 0; i < m; ++i) total += prob_[i];
        const double u = uniform() * total;
        double cum = 0;
        for (std::size_t i = 0; i < m; ++i) {
            cum += prob_[i];
            if (u < cum) return token_id(idx_[i]);
        }
        return token_id(idx_[m - 1]);
    }

private:
    /// Uniform in [0, 1) from the top 53 bits of the generator.
    double uniform() { return double(rng_() >> 11) * 0x1.0p-53; }

    SamplingParams p_;
    std::mt19937_64 rng_;
    std::vector<std::uint32_t> idx_;
    std::vector<double> prob_;
};

}  // namespace hystack
