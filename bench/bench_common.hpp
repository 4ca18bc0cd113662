#pragma once
// Shared benchmark helpers: the project's naming/counter convention and the machine limits
// (streaming read bandwidth, fp32 FMA peak) that targets are stated against.
#include <benchmark/benchmark.h>

#include <hystack/core.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace hystack::bench {

/// Sets the flops rate counter (FLOPs per second) for `flops_per_iter` FLOPs each iteration.
inline void set_flops(benchmark::State& state, double flops_per_iter) {
    state.counters["flops"] = benchmark::Counter(flops_per_iter * double(state.iterations()), benchmark::Counter::kIsRate);
}

/// A pool shared by the benchmarks of one binary, resized per benchmark (threads live across calls).
inline ThreadPool& pool(std::size_t threads) {
    static ThreadPool p(1);
    if (p.num_threads() != threads) p.set_num_threads(threads);
    return p;
}

/// Evicts the last-level cache by streaming through a buffer larger than it (for "cold" figures).
inline void flush_cache() {
    static std::vector<float> junk(64u << 20 >> 2, 1.0f);  // 64 MB
    float s = 0;
    for (std::size_t i = 0; i < junk.size(); i += 16) s += junk[i]++;
    benchmark::DoNotOptimize(s);
}

/// Sum of a buffer with SIMD: the streaming read kernel BM_stream_read reports (bytes/s).
template <class Arch = simd::default_arch>
inline float stream_sum(const float* p, std::size_t n) {
    using B = simd::batch<Arch>;
    constexpr std::size_t W = simd::width<Arch>;
    B a0(0.0f), a1(0.0f), a2(0.0f), a3(0.0f);
    std::size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        a0 += simd::load<Arch>(p + i);
        a1 += simd::load<Arch>(p + i + W);
        a2 += simd::load<Arch>(p + i + 2 * W);
        a3 += simd::load<Arch>(p + i + 3 * W);
    }
    float s = simd::reduce_add<Arch>((a0 + a1) + (a2 + a3));
    for (; i < n; ++i) s += p[i];
    return s;
}

}  // namespace hystack::bench
