// MoE and dense SwiGLU MLP: prefill as FLOP/s (compute bound: expert GEMMs over token buckets),
// decode step as weight bytes read per second with cold weights (memory bound), threads 1 and 2.
// Shapes: d_model 1024, hidden 2816; MoE 8 experts, top-2.
#include "bench_common.hpp"

#include <hystack/layers.hpp>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

using namespace hystack;

namespace {

constexpr std::size_t d_model = 1024, hidden = 2816, experts = 8, top_k = 2;

void fill_random(std::span<float> v, unsigned seed, float scale) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-scale, scale);
    for (auto& x : v) x = d(rng);
}

std::unique_ptr<SparseMoE> make_moe(unsigned seed) {
    auto moe = std::make_unique<SparseMoE>(SparseMoEConfig{d_model, hidden, experts, top_k, false});
    for (auto& p : moe->params()) fill_random(p.data, seed++, 1.0f / std::sqrt(float(p.shape[1])));
    return moe;
}

std::unique_ptr<SwiGLU> make_mlp(unsigned seed) {
    auto mlp = std::make_unique<SwiGLU>(SwiGLUConfig{d_model, hidden});
    for (auto& p : mlp->params()) fill_random(p.data, seed++, 1.0f / std::sqrt(float(p.shape[1])));
    return mlp;
}

// FLOPs of one token through one SwiGLU (gate, up, down).
constexpr double swiglu_flops = 2.0 * 3.0 * double(d_model) * double(hidden);
constexpr double swiglu_bytes = 3.0 * double(d_model) * double(hidden) * sizeof(float);

}  // namespace

// 512 tokens routed over 8 experts (top-2): each expert runs as GEMMs over its ~128-token bucket.
static void BM_moe_prefill(benchmark::State& state) {
    const std::size_t E = std::size_t(state.range(0)), k = std::size_t(state.range(1)), L = std::size_t(state.range(4));
    const std::size_t threads = std::size_t(state.range(5));
    (void)E;
    (void)k;
    static auto moe = make_moe(1);
    Matrix<float> x(L, d_model), y(L, d_model);
    fill_random(x.span(), 7, 1.0f);
    auto& ex = bench::pool(threads);
    const double flops = double(L) * double(top_k) * swiglu_flops + 2.0 * double(L) * double(d_model) * double(experts);
    bench::run_with_peak_probe(state, threads, flops, [&] {
        moe->prefill(x, y.view(), ex);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L));
    state.counters["lb"] = moe->router_stats().load_balancing;
}
BENCHMARK(BM_moe_prefill)
    ->ArgNames({"experts", "top_k", "d_model", "hidden", "L", "threads"})
    ->Args({experts, top_k, d_model, hidden, 512, 1})
    ->Args({experts, top_k, d_model, hidden, 512, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One token with cold weights: alternates between two layers (2 x 277 MB) and varies the token, so
// the chosen experts' 69 MB are never in cache. Bytes: the chosen experts' weights (+ router).
static void BM_moe_step(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(5));
    static std::unique_ptr<SparseMoE> moes[2] = {make_moe(1), make_moe(100)};
    Matrix<float> xs(16, d_model);
    fill_random(xs.span(), 9, 1.0f);
    std::vector<float> y(d_model);
    auto& ex = bench::pool(threads);
    std::size_t i = 0;
    const double bytes = double(top_k) * swiglu_bytes + double(experts * d_model * sizeof(float));
    bench::run_with_stream_probe(state, threads, bytes, [&] {
        moes[i & 1]->step(std::span<const float>(xs.row(i % 16), d_model), y, ex);
        ++i;
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    bench::set_flops(state, double(top_k) * swiglu_flops);
}
BENCHMARK(BM_moe_step)
    ->ArgNames({"experts", "top_k", "d_model", "hidden", "L", "threads"})
    ->Args({experts, top_k, d_model, hidden, 1, 1})
    ->Args({experts, top_k, d_model, hidden, 1, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Dense SwiGLU over 512 tokens.
static void BM_swiglu_prefill(benchmark::State& state) {
    const std::size_t L = std::size_t(state.range(2)), threads = std::size_t(state.range(3));
    static auto mlp = make_mlp(3);
    Matrix<float> x(L, d_model), y(L, d_model);
    fill_random(x.span(), 11, 1.0f);
    auto& ex = bench::pool(threads);
    bench::run_with_peak_probe(state, threads, double(L) * swiglu_flops, [&] {
        mlp->prefill(x, y.view(), ex);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L));
}
BENCHMARK(BM_swiglu_prefill)
    ->ArgNames({"d_model", "hidden", "L", "threads"})
    ->Args({d_model, hidden, 512, 1})
    ->Args({d_model, hidden, 512, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One token with cold weights: rotates over 4 MLPs (4 x 34.6 MB > the last-level cache).
static void BM_swiglu_step(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(3));
    static std::unique_ptr<SwiGLU> mlps[4] = {make_mlp(3), make_mlp(30), make_mlp(60), make_mlp(90)};
    std::vector<float> x(d_model), y(d_model);
    fill_random(x, 13, 1.0f);
    auto& ex = bench::pool(threads);
    std::size_t i = 0;
    bench::run_with_stream_probe(state, threads, swiglu_bytes, [&] {
        mlps[i++ & 3]->step(x, y, ex);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    bench::set_flops(state, swiglu_flops);
}
BENCHMARK(BM_swiglu_step)
    ->ArgNames({"d_model", "hidden", "L", "threads"})
    ->Args({d_model, hidden, 1, 1})
    ->Args({d_model, hidden, 1, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
