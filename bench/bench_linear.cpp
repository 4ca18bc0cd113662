// linear (y = x W^T + b): the projection every layer's prefill and decode run through.
// Prefill shapes are compute bound (FLOP/s vs BM_fma_peak); L = 1..4 (decode, batched step) are
// bound by reading W once (bytes/s vs BM_stream_read).
#include "bench_common.hpp"

#include <hystack/kernels.hpp>

#include <random>

using namespace hystack;

static void fill_random(std::span<float> v, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (auto& x : v) x = d(rng);
}

// The benchmarks' weight-type argument: 0 f32, 1 bf16, 2 q8_0.
static DType weight_type(std::int64_t arg) { return DType(std::uint8_t(arg)); }

// A random [out, in] weight of type t (values in [-1, 1] before conversion).
static Weight random_weight(std::size_t out, std::size_t in, DType t, unsigned seed) {
    Matrix<float> W(out, in);
    fill_random(W.span(), seed);
    return Weight::from(W.view(), t);
}

// Compute-bound: W stays in L2/L3 across iterations (as in a prefill over many tokens). pct_of_peak is
// against the fp32 FMA peak whatever the weight type.
static void BM_linear(benchmark::State& state) {
    const std::size_t in = std::size_t(state.range(0)), out = std::size_t(state.range(1)), L = std::size_t(state.range(2));
    const std::size_t threads = std::size_t(state.range(3));
    const DType type = weight_type(state.range(4));
    state.SetLabel(to_string(type));
    Matrix<float> x(L, in), y(L, out);
    fill_random(x.span(), 1);
    const Weight W = random_weight(out, in, type, 2);
    auto& ex = bench::pool(threads);
    bench::run_with_peak_probe(state, threads, 2.0 * double(L) * double(in) * double(out), [&] {
        kernels::project(x.view(), W.view(), {}, y.view(), ex);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L));
}
BENCHMARK(BM_linear)
    ->ArgNames({"in", "out", "L", "threads", "type"})
    ->ArgsProduct({{1024}, {4096}, {512}, {1, 2}, {0, 1, 2}})
    ->ArgsProduct({{4096}, {1024}, {512}, {1, 2}, {0, 1, 2}})
    ->ArgsProduct({{1024}, {2816}, {128}, {1}, {0, 1, 2}})  // one MoE expert's bucket (512 tokens, top-2 of 8)
    ->ArgsProduct({{2816}, {1024}, {128}, {1}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Decode: L (1..4) tokens against cold weights. Rotates over enough copies of W (> 64 MB in all)
// that every call reads W from DRAM; bytes/s counts the weight bytes read.
static void BM_linear_gemv(benchmark::State& state) {
    const std::size_t in = std::size_t(state.range(0)), out = std::size_t(state.range(1)), L = std::size_t(state.range(2));
    const std::size_t threads = std::size_t(state.range(3));
    const DType type = weight_type(state.range(4));
    state.SetLabel(to_string(type));
    const std::size_t wbytes = out * row_bytes(type, in);
    const std::size_t copies = std::max<std::size_t>(2, (256u << 20) / wbytes + 1);
    std::vector<Weight> Ws;
    for (std::size_t i = 0; i < copies; ++i) Ws.push_back(random_weight(out, in, type, unsigned(10 + i)));
    Matrix<float> x(L, in), y(L, out);
    fill_random(x.span(), 1);
    auto& ex = bench::pool(threads);
    std::size_t k = 0;
    bench::run_with_stream_probe(state, threads, double(wbytes), [&] {
        kernels::project(x.view(), Ws[k].view(), {}, y.view(), ex);
        k = k + 1 == copies ? 0 : k + 1;
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    bench::set_flops(state, 2.0 * double(L) * double(in) * double(out));
}
BENCHMARK(BM_linear_gemv)
    ->ArgNames({"in", "out", "L", "threads", "type"})
    ->ArgsProduct({{1024}, {4096}, {1, 4}, {1, 2}, {0, 1, 2}})
    ->ArgsProduct({{4096}, {1024}, {1}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
