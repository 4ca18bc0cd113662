#pragma once
#include "../core/module.hpp"

// Seeded random weights for demos, tests and benchmarks, by HF parameter name: norms 1,
// Mamba's A_log = log(1..d_state), D = 1, dt_proj.bias = softplus^-1 of dt in [1e-3, 1e-1]
// (Mamba's init), other biases 0, matrices uniform in +-1/sqrt(fan_in), embeddings uniform +-1.
// Deterministic: the value of element j of parameter p depends only on (seed, p, j); a weight of
// another type than f32 holds those values converted (bf16 rounded, q8_0 quantised).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>
#include <algorithm>

#include "../core/executor.hpp"
#include "../core/param.hpp"
#include "../core/weight.hpp"

namespace hystack {

namespace detail {
inline std::uint64_t splitmix64(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
inline bool ends_with(const std::string& s, const std::string& suf) {
    return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}
}  // namespace detail

/// Fills every parameter with seeded random values suited to its role (see the file comment).
/// Large parameters are split over the executor's threads (values do not depend on the split).
template <Executor Exec>
void randomize_params(const ParamList& params, std::uint64_t seed, Exec& exec) {
    for (std::size_t p = 0; p < params.size(); ++p) {
        const auto& ref = params[p];
        const std::string& n = ref.name;
        const std::uint64_t s0 = seed * 0x9e3779b97f4a7c15ull + p * 0xd1b54a32d192ed03ull + 1;
        // Counter-based: element j's value depends only on (s0, j).
        auto uni = [s0](std::size_t j) {
            std::uint64_t s = s0 + j * 0x9e3779b97f4a7c15ull;
            return float(double(detail::splitmix64(s) >> 11) * 0x1.0p-53);  // [0, 1)
        };
        const std::size_t last = ref.shape.empty() ? 1 : ref.shape.back();
        std::size_t fan_in = 1;
        for (std::size_t i = 1; i < ref.shape.size(); ++i) fan_in *= ref.shape[i];
        const float a = 1.0f / std::sqrt(float(fan_in ? fan_in : 1));
        int role = 0;
        if (detail::ends_with(n, "norm.weight")) role = 1;
        else if (detail::ends_with(n, "A_log")) role = 2;
        else if (detail::ends_with(n, ".D") || n == "D") role = 1;
        else if (detail::ends_with(n, "dt_proj.bias")) role = 3;
        else if (detail::ends_with(n, "bias")) role = 4;
        else if (detail::ends_with(n, "embed_tokens.weight")) role = 5;
        auto value = [&](std::size_t j) -> float {
            switch (role) {
                case 1: return 1.0f;
                case 2: return std::log(float(j % last + 1));
                case 3: {
                    const float dt = std::exp(std::log(1e-3f) + uni(j) * (std::log(1e-1f) - std::log(1e-3f)));
                    return dt + std::log(-std::expm1(-dt));  // softplus^-1(dt)
                }
                case 4: return 0.0f;
                case 5: return 2.0f * uni(j) - 1.0f;
                default: return a * (2.0f * uni(j) - 1.0f);
            }
        };
        if (ref.weight && ref.data.empty()) {
            // a weight of another type: the f32 values, converted row by row (encode_row)
            Weight& w = *ref.weight;
            const std::size_t cols = w.cols();
            exec.parallel_for(ref.rows, std::max<std::size_t>(1, (1u << 14) / std::max<std::size_t>(cols, 1)),
                              [&](std::size_t r0, std::size_t r1) {
                                  std::vector<float> row(cols);
                                  for (std::size_t r = r0; r < r1; ++r) {
                                      for (std::size_t c = 0; c < cols; ++c) row[c] = value(r * cols + c);
                                      encode_row(w.type(), row, w.row_bytes(ref.row0 + r, 1));
                                  }
                              });
            continue;
        }
        auto body = [&](std::size_t b, std::size_t e) {
            for (std::size_t j = b; j < e; ++j) ref.data[j] = value(j);
        };
        if (ref.data.size() >= (1u << 16))
            exec.parallel_for(ref.data.size(), 1u << 14, body);
        else
            body(0, ref.data.size());
    }
}

inline void randomize_params(const ParamList& params, std::uint64_t seed) {
    SerialExecutor serial;
    randomize_params(params, seed, serial);
}

}  // namespace hystack
