#pragma once
// Shared benchmark helpers: the project's naming/counter convention and the machine limits
// (streaming read bandwidth, fp32 FMA peak) that targets are stated against.
#include <benchmark/benchmark.h>

#include <hystack/core.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
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

/// A buffer of `bytes` for streaming reads, written once (so its pages exist before the first timing).
inline Buffer<float> stream_buffer(std::size_t bytes) {
    Buffer<float> buf(bytes / sizeof(float));
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = float(i & 1023);
    return buf;
}

/// Bytes/s of one streaming read of `buf` on `threads` threads (the kernel of BM_stream_read).
inline double stream_read_once(const Buffer<float>& buf, std::size_t threads) {
    auto& ex = pool(threads);
    float sums[64] = {};
    const std::size_t chunk = 4096, n = buf.size() / chunk * chunk;
    const auto t0 = std::chrono::steady_clock::now();
    ex.parallel_for(n / chunk, 1, [&](std::size_t b, std::size_t e, std::size_t c) {
        sums[c] += stream_sum(buf.data() + b * chunk, (e - b) * chunk);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(sums);
    return double(n * sizeof(float)) / s;
}

/// A machine limit measured beside a benchmark, not in another run: this box shares its cores and DRAM with
/// neighbours, and bandwidth and FMA throughput drift by 20% within a minute, so a ratio of two separate runs
/// mostly measures the drift. Between timed iterations (under PauseTiming) probe() measures the limit once;
/// add() records an iteration's own rate against the probe just before it. report() sets the limit's median
/// (`limit_name`, in units of 1e9) and `pct_name`, the median of the per-iteration ratios, in percent.
class LimitProbe {
public:
    LimitProbe(std::function<double()> measure, std::string limit_name, std::string pct_name)
        : measure_(std::move(measure)), limit_name_(std::move(limit_name)), pct_name_(std::move(pct_name)) {}
    void probe() {
        last_ = measure_();
        limits_.push_back(last_);
    }
    /// An iteration that did `amount` (bytes, FLOPs) in `seconds`, against the last probe.
    void add(double amount, double seconds) {
        if (last_ > 0 && seconds > 0) ratios_.push_back(amount / seconds / last_);
    }
    void report(benchmark::State& state) const {
        state.counters[limit_name_] = median(limits_) / 1e9;
        state.counters[pct_name_] = 100.0 * median(ratios_);
    }

private:
    static double median(std::vector<double> v) {
        if (v.empty()) return 0.0;
        std::sort(v.begin(), v.end());
        return v[v.size() / 2];
    }
    std::function<double()> measure_;
    std::string limit_name_, pct_name_;
    double last_ = 0.0;
    std::vector<double> limits_, ratios_;
};

/// Streaming read of 256 MB (far past the L3) on `threads` threads: `stream_GB_per_s`, `pct_of_stream`.
/// It also leaves the caches cold for the next iteration.
inline LimitProbe stream_probe(std::size_t threads) {
    auto buf = std::make_shared<Buffer<float>>(stream_buffer(std::size_t(256) << 20));
    return LimitProbe([buf, threads] { return stream_read_once(*buf, threads); }, "stream_GB_per_s", "pct_of_stream");
}

/// fp32 FMA peak kernel: 12 independent accumulator chains, no memory traffic (2 * 12 * width FLOPs per iteration).
template <class Arch = simd::default_arch>
inline float fma_chains(std::size_t iters) {
    using B = simd::batch<Arch>;
    B acc[12];
    for (int i = 0; i < 12; ++i) acc[i] = B(float(i) * 0.001f);
    const B m(0.999999f), a(1e-7f);
    for (std::size_t it = 0; it < iters; ++it)
        for (int i = 0; i < 12; ++i) acc[i] = simd::fma<Arch>(acc[i], m, a);
    B s(0.0f);
    for (int i = 0; i < 12; ++i) s += acc[i];
    return simd::reduce_add<Arch>(s);
}

/// FLOP/s of one fma_chains run of `iters` iterations on each of `threads` threads (the kernel of BM_fma_peak).
inline double fma_peak_once(std::size_t threads, std::size_t iters = std::size_t(1) << 16) {
    auto& ex = pool(threads);
    float r[64] = {};
    const auto t0 = std::chrono::steady_clock::now();
    ex.parallel_for(threads, 1, [&](std::size_t, std::size_t, std::size_t c) { r[c] = fma_chains(iters); });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(r);
    return 2.0 * 12 * double(simd::width<>) * double(iters) * double(threads) / s;
}

/// FMA peak on `threads` threads: `peak_GFLOPs`, `pct_of_peak`.
inline LimitProbe peak_probe(std::size_t threads) {
    return LimitProbe(
        [threads] {
            fma_peak_once(threads, std::size_t(1) << 12);  // wakes the pool's threads (they sleep during PauseTiming)
            return fma_peak_once(threads);
        },
        "peak_GFLOPs", "pct_of_peak");
}

/// The loop of a probed benchmark: per iteration probe.probe() (untimed), then body() timed, doing `amount`.
template <class Body>
void run_probed(benchmark::State& state, LimitProbe probe, double amount, Body&& body) {
    for (auto _ : state) {
        state.PauseTiming();
        probe.probe();
        state.ResumeTiming();
        const auto t0 = std::chrono::steady_clock::now();
        body();
        probe.add(amount, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    probe.report(state);
}

/// Bandwidth-bound loop: body() reads `bytes`; sets the bytes/s rate and the stream probe's counters.
template <class Body>
void run_with_stream_probe(benchmark::State& state, std::size_t threads, double bytes, Body&& body) {
    run_probed(state, stream_probe(threads), bytes, body);
    state.SetBytesProcessed(std::int64_t(double(state.iterations()) * bytes));
}

/// Compute-bound loop: body() computes `flops`; sets the `flops` rate and the peak probe's counters.
template <class Body>
void run_with_peak_probe(benchmark::State& state, std::size_t threads, double flops, Body&& body) {
    run_probed(state, peak_probe(threads), flops, body);
    set_flops(state, flops);
}

}  // namespace hystack::bench
