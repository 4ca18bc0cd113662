// Core benchmarks: machine limits (streaming read bandwidth, fp32 FMA peak), SIMD math against
// std::, and the thread pool's per-call overhead and speedup.
#include "bench_common.hpp"

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

using namespace hystack;

// Streaming read of 512 MB (far past any cache): the bandwidth figure decode targets are stated against.
static void BM_stream_read(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(0));
    const std::size_t n = (512u << 20) / sizeof(float);
    static const Buffer<float> buf = bench::stream_buffer(n * sizeof(float));
    for (auto _ : state) benchmark::DoNotOptimize(bench::stream_read_once(buf, threads));
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(n * sizeof(float)));
}
BENCHMARK(BM_stream_read)->ArgNames({"threads"})->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

// fp32 FMA peak: 12 independent accumulator chains per thread, no memory traffic (bench::fma_chains).
static void BM_fma_peak(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(0));
    const std::size_t iters = 1u << 16;
    auto& ex = bench::pool(threads);
    for (auto _ : state) {
        float r[64] = {};
        ex.parallel_for(threads, 1, [&](std::size_t, std::size_t, std::size_t c) { r[c] = bench::fma_chains(iters); });
        benchmark::DoNotOptimize(r);
    }
    bench::set_flops(state, 2.0 * 12 * simd::width<> * double(iters) * double(threads));
}
BENCHMARK(BM_fma_peak)->ArgNames({"threads"})->Arg(1)->Arg(2)->UseRealTime();

static std::vector<float> math_input(std::size_t n, float lo, float hi) {
    std::vector<float> x(n);
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> d(lo, hi);
    for (auto& v : x) v = d(rng);
    return x;
}

template <class F>
static void run_elementwise(benchmark::State& state, F f, float lo, float hi) {
    const std::size_t n = std::size_t(state.range(0));
    auto x = math_input(n, lo, hi);
    std::vector<float> y(n);
    for (auto _ : state) {
        f(x, y);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(n));
}

static void BM_exp_simd(benchmark::State& s) {
    run_elementwise(s, [](auto& x, auto& y) { math::exp(std::span<const float>(x), std::span<float>(y)); }, -80, 80);
}
static void BM_exp_std(benchmark::State& s) {
    run_elementwise(s, [](auto& x, auto& y) { for (std::size_t i = 0; i < x.size(); ++i) y[i] = std::exp(x[i]); }, -80, 80);
}
static void BM_silu_simd(benchmark::State& s) {
    run_elementwise(s, [](auto& x, auto& y) { math::silu(std::span<const float>(x), std::span<float>(y)); }, -20, 20);
}
static void BM_silu_std(benchmark::State& s) {
    run_elementwise(s, [](auto& x, auto& y) { for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] / (1.0f + std::exp(-x[i])); }, -20, 20);
}
static void BM_softplus_simd(benchmark::State& s) {
    run_elementwise(s, [](auto& x, auto& y) { math::softplus(std::span<const float>(x), std::span<float>(y)); }, -30, 30);
}
static void BM_softplus_std(benchmark::State& s) {
    run_elementwise(s, [](auto& x, auto& y) {
        for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] > 20.0f ? x[i] : std::log1p(std::exp(x[i]));
    }, -30, 30);
}
BENCHMARK(BM_exp_simd)->ArgNames({"n"})->Arg(1 << 20);
BENCHMARK(BM_exp_std)->ArgNames({"n"})->Arg(1 << 20);
BENCHMARK(BM_silu_simd)->ArgNames({"n"})->Arg(1 << 20);
BENCHMARK(BM_silu_std)->ArgNames({"n"})->Arg(1 << 20);
BENCHMARK(BM_softplus_simd)->ArgNames({"n"})->Arg(1 << 20);
BENCHMARK(BM_softplus_std)->ArgNames({"n"})->Arg(1 << 20);

// Per-call overhead of parallel_for with trivial work: what a kernel pays for going parallel.
static void BM_pool_overhead(benchmark::State& state) {
    auto& ex = bench::pool(std::size_t(state.range(0)));
    std::atomic<int> sink{0};
    for (auto _ : state) ex.parallel_for(ex.num_threads(), 1, [&](std::size_t b, std::size_t e) { sink += int(e - b); });
    state.SetItemsProcessed(std::int64_t(state.iterations()));
    benchmark::DoNotOptimize(sink.load());
}
BENCHMARK(BM_pool_overhead)->ArgNames({"threads"})->Arg(1)->Arg(2)->UseRealTime();

// 1 ms of compute split into 2 equal halves: the speedup with 2 threads is time(1)/time(2).
static void BM_pool_1ms(benchmark::State& state) {
    auto& ex = bench::pool(std::size_t(state.range(0)));
    // Calibrate a spin that takes ~0.5 ms per half on this machine.
    static std::size_t iters_half = [] {
        auto t0 = std::chrono::steady_clock::now();
        benchmark::DoNotOptimize(bench::fma_chains(1u << 14));
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        return std::size_t(double(1u << 14) * 0.5e-3 / s);
    }();
    for (auto _ : state) {
        float r[2] = {};
        ex.parallel_for(2, 1, [&](std::size_t b, std::size_t e) {
            for (std::size_t i = b; i < e; ++i) r[i] = bench::fma_chains(iters_half);
        });
        benchmark::DoNotOptimize(r);
    }
}
BENCHMARK(BM_pool_1ms)->ArgNames({"threads"})->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
