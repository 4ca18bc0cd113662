// Mamba benchmarks: selective scan and causal conv1d kernels (ns per element is 1 / items_per_second),
// the mixer's prefill (tokens/s) and decode step with cold weights (tokens/s and weight bytes/s, to set next to
// BM_stream_read from the same binary).
#include "bench_common.hpp"

#include <hystack/layers.hpp>

#include <memory>
#include <random>
#include <vector>

using namespace hystack;

namespace {

void fill(std::span<float> v, float lo, float hi, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    for (auto& x : v) x = d(rng);
}

}  // namespace

// items = token x channel x state elements, so 1e9 / items_per_second is ns per element.
static void BM_selective_scan(benchmark::State& state) {
    const std::size_t d = std::size_t(state.range(0)), N = std::size_t(state.range(1)), L = std::size_t(state.range(2));
    const std::size_t threads = std::size_t(state.range(3));
    Matrix<float> u(L, d), delta(L, d), z(L, d), out(L, d), A(d, N), B(L, N), C(L, N), h(d, N);
    std::vector<float> D(d), bias(d);
    fill(u.span(), -1, 1, 1);
    fill(delta.span(), -3, 1, 2);
    fill(z.span(), -2, 2, 3);
    fill(A.span(), -8, -0.5f, 4);
    fill(B.span(), -1, 1, 5);
    fill(C.span(), -1, 1, 6);
    fill(D, -1, 1, 7);
    fill(bias, -1, 0, 8);
    auto& ex = bench::pool(threads);
    for (auto _ : state) {
        kernels::selective_scan(u.view(), delta.view(), bias, A.view(), B.view(), C.view(), D, z.view(), h.view(),
                                out.view(), ex);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L * d * N));
    bench::set_flops(state, double(L * d * N) * 7.0);  // mul, exp (counted as 1), 3 FMA = 7 flops; softplus etc. not counted
}
BENCHMARK(BM_selective_scan)
    ->ArgNames({"d_inner", "d_state", "L", "threads"})
    ->ArgsProduct({{2048}, {16}, {1, 512, 4096}, {1, 2}})
    ->UseRealTime();

// items = token x channel.
static void BM_causal_conv1d(benchmark::State& state) {
    const std::size_t d = std::size_t(state.range(0)), K = std::size_t(state.range(1)), L = std::size_t(state.range(2));
    const std::size_t threads = std::size_t(state.range(3));
    Matrix<float> x(L, d), w(d, K), st(K - 1, d), out(L, d);
    std::vector<float> bias(d);
    fill(x.span(), -1, 1, 1);
    fill(w.span(), -1, 1, 2);
    fill(bias, -1, 1, 3);
    auto& ex = bench::pool(threads);
    for (auto _ : state) {
        kernels::causal_conv1d(x.view(), w.view(), bias, st.view(), out.view(), ex);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L * d));
    state.SetBytesProcessed(std::int64_t(state.iterations()) * std::int64_t(2 * L * d * sizeof(float)));
}
BENCHMARK(BM_causal_conv1d)
    ->ArgNames({"d_inner", "K", "L", "threads"})
    ->ArgsProduct({{2048}, {4}, {1, 512, 4096}, {1, 2}})
    ->UseRealTime();
