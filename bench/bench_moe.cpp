// MoE and dense SwiGLU MLP: prefill as FLOP/s (compute bound: expert GEMMs over token buckets),
// decode step as weight bytes read per second with cold weights (memory bound), threads 1 and 2.
// Shapes: d_model 1024, hidden 2816; MoE 8 experts, top-2. The last argument is the experts' (and the
// MLP's) weight type: 0 f32, 1 bf16, 2 q8_0.
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

// Random values in +-scale: a float parameter directly, a typed weight's rows converted (encode_row).
void fill_param(const ParamRef& p, unsigned seed, float scale) {
    if (!p.data.empty() || !p.weight) {
        fill_random(p.data, seed, scale);
        return;
    }
    std::vector<float> row(p.weight->cols());
    for (std::size_t r = 0; r < p.rows; ++r) {
        fill_random(row, seed + unsigned(r) * 7919u, scale);
        encode_row(p.weight->type(), row, p.weight->row_bytes(p.row0 + r, 1));
    }
}

DType type_arg(std::int64_t v) { return DType(std::uint8_t(v)); }

std::unique_ptr<SparseMoE> make_moe(unsigned seed, DType type) {
    SparseMoEConfig c{d_model, hidden, experts, top_k, false};
    c.weights = type;
    auto moe = std::make_unique<SparseMoE>(c);
    for (auto& p : moe->params()) fill_param(p, seed++, 1.0f / std::sqrt(float(p.shape[1])));
    return moe;
}

std::unique_ptr<SwiGLU> make_mlp(unsigned seed, DType type) {
    auto mlp = std::make_unique<SwiGLU>(SwiGLUConfig{d_model, hidden, type});
    for (auto& p : mlp->params()) fill_param(p, seed++, 1.0f / std::sqrt(float(p.shape[1])));
    return mlp;
}

// FLOPs of one token through one SwiGLU (gate, up, down), and the bytes of its weights in type t.
constexpr double swiglu_flops = 2.0 * 3.0 * double(d_model) * double(hidden);
double swiglu_bytes(DType t) {
    return 2.0 * double(hidden) * double(row_bytes(t, d_model)) + double(d_model) * double(row_bytes(t, hidden));
}

}  // namespace

// 512 tokens routed over 8 experts (top-2): each expert runs as GEMMs over its ~128-token bucket.
static void BM_moe_prefill(benchmark::State& state) {
    const std::size_t E = std::size_t(state.range(0)), k = std::size_t(state.range(1)), L = std::size_t(state.range(4));
    const std::size_t threads = std::size_t(state.range(5));
    (void)E;
    (void)k;
    const DType type = type_arg(state.range(6));
    state.SetLabel(to_string(type));
    static std::unique_ptr<SparseMoE> moes[3];
    auto& moe = moes[std::size_t(type)];
    if (!moe) moe = make_moe(1, type);
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
    ->ArgNames({"experts", "top_k", "d_model", "hidden", "L", "threads", "type"})
    ->ArgsProduct({{experts}, {top_k}, {d_model}, {hidden}, {512}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One token with cold weights: alternates between two layers (2 x 277 MB) and varies the token, so
// the chosen experts' 69 MB are never in cache. Bytes: the chosen experts' weights (+ router).
static void BM_moe_step(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(5));
    const DType type = type_arg(state.range(6));
    state.SetLabel(to_string(type));
    static std::unique_ptr<SparseMoE> all[3][2];
    auto& moes = all[std::size_t(type)];
    if (!moes[0]) {
        moes[0] = make_moe(1, type);
        moes[1] = make_moe(100, type);
    }
    Matrix<float> xs(16, d_model);
    fill_random(xs.span(), 9, 1.0f);
    std::vector<float> y(d_model);
    auto& ex = bench::pool(threads);
    std::size_t i = 0;
    const double bytes = double(top_k) * swiglu_bytes(type) + double(experts * d_model * sizeof(float));
    bench::run_with_stream_probe(state, threads, bytes, [&] {
        moes[i & 1]->step(std::span<const float>(xs.row(i % 16), d_model), y, ex);
        ++i;
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    bench::set_flops(state, double(top_k) * swiglu_flops);
}
BENCHMARK(BM_moe_step)
    ->ArgNames({"experts", "top_k", "d_model", "hidden", "L", "threads", "type"})
    ->ArgsProduct({{experts}, {top_k}, {d_model}, {hidden}, {1}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);

// Dense SwiGLU over 512 tokens.
static void BM_swiglu_prefill(benchmark::State& state) {
    const std::size_t L = std::size_t(state.range(2)), threads = std::size_t(state.range(3));
    const DType type = type_arg(state.range(4));
    state.SetLabel(to_string(type));
    static std::unique_ptr<SwiGLU> mlps[3];
    auto& mlp = mlps[std::size_t(type)];
    if (!mlp) mlp = make_mlp(3, type);
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
    ->ArgNames({"d_model", "hidden", "L", "threads", "type"})
    ->ArgsProduct({{d_model}, {hidden}, {512}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// One token with cold weights: rotates over 4 MLPs (4 x 34.6 MB > the last-level cache).
static void BM_swiglu_step(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(3));
    const DType type = type_arg(state.range(4));
    state.SetLabel(to_string(type));
    static std::unique_ptr<SwiGLU> all[3][4];
    auto& mlps = all[std::size_t(type)];
    if (!mlps[0])
        for (unsigned i = 0; i < 4; ++i) mlps[i] = make_mlp(3 + 30 * i, type);
    std::vector<float> x(d_model), y(d_model);
    fill_random(x, 13, 1.0f);
    auto& ex = bench::pool(threads);
    std::size_t i = 0;
    bench::run_with_stream_probe(state, threads, swiglu_bytes(type), [&] {
        mlps[i++ & 3]->step(x, y, ex);
        benchmark::DoNotOptimize(y.data());
        benchmark::ClobberMemory();
    });
    bench::set_flops(state, swiglu_flops);
}
BENCHMARK(BM_swiglu_step)
    ->ArgNames({"d_model", "hidden", "L", "threads", "type"})
    ->ArgsProduct({{d_model}, {hidden}, {1}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
