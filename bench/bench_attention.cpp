// Attention: causal prefill (compute bound: FLOP/s vs BM_fma_peak, counting 4 L^2 d H / 2 for causal),
// decode against a long KV cache (bound by reading K and V: bytes/s vs BM_stream_read), and
// sliding-window prefill (time vs the global causal time at the same L).
#include "bench_common.hpp"

#include <hystack/kernels.hpp>

#include <random>

using namespace hystack;

static void fill_random(std::span<float> v, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(-1.0f, 1.0f);
    for (auto& x : v) x = d(rng);
}

// Prefill of L tokens at once (no past): q [L, 16 * 64], k, v [L, 4 * 64].
static void run_prefill(benchmark::State& state, std::size_t L, std::size_t window, std::size_t threads) {
    const std::size_t H = 16, Hk = 4, d = 64;
    const kernels::AttentionDims dims{H, Hk, d, window, 0.0f};
    Matrix<float> q(L, H * d), k(L, Hk * d), v(L, Hk * d), out(L, H * d);
    fill_random(q.span(), 1);
    fill_random(k.span(), 2);
    fill_random(v.span(), 3);
    kernels::AttentionWorkspace ws;
    auto& ex = bench::pool(threads);
    const auto kv = kernels::KVView::of(k.view(), v.view());
    // Useful FLOPs: QK^T and PV over the visible (i, j) pairs, 2 FLOPs per multiply-add each.
    double pairs = 0;
    for (std::size_t i = 0; i < L; ++i) pairs += double(window ? std::min(i + 1, window) : i + 1);
    const double causal_half = double(L) * double(L) / 2.0;
    bench::run_with_peak_probe(state, threads, 4.0 * (window ? pairs : causal_half) * double(d) * double(H), [&] {
        kernels::attention(q.view(), 0, kv, out.view(), dims, ws, ex);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    });
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L));
}

static void BM_attention_prefill(benchmark::State& state) {
    run_prefill(state, std::size_t(state.range(0)), 0, std::size_t(state.range(1)));
}
BENCHMARK(BM_attention_prefill)
    ->ArgNames({"L", "threads"})
    ->ArgsProduct({{512, 2048, 8192}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

static void BM_swa_prefill(benchmark::State& state) {
    run_prefill(state, std::size_t(state.range(1)), std::size_t(state.range(0)), std::size_t(state.range(2)));
}
BENCHMARK(BM_swa_prefill)->ArgNames({"W", "L", "threads"})->ArgsProduct({{512}, {8192}, {1, 2}})->UseRealTime()->Unit(benchmark::kMillisecond);

// Decode one token (16 heads, 4 kv heads, head_dim 64) against a cache of `kv_len` positions.
// K and V of all layers' caches do not fit in cache at 32768 (64 MB); several copies rotate so each
// call reads K/V from DRAM at 4096 as well (bytes/s counts K and V bytes read).
static void BM_attention_decode(benchmark::State& state) {
    const std::size_t kv_len = std::size_t(state.range(0)), threads = std::size_t(state.range(1));
    const std::size_t H = 16, Hk = 4, d = 64;
    const kernels::AttentionDims dims{H, Hk, d, 0, 0.0f};
    const std::size_t kv_bytes = 2 * kv_len * Hk * d * sizeof(float);
    const std::size_t copies = std::max<std::size_t>(1, (128u << 20) / kv_bytes);
    std::vector<KVCache> caches;
    Matrix<float> rows(kv_len, Hk * d);
    fill_random(rows.span(), 7);
    for (std::size_t c = 0; c < copies; ++c) {
        caches.emplace_back(kv_len + 1, Hk, d);
        caches.back().append(rows.view(), rows.view());
    }
    Matrix<float> q(1, H * d), out(1, H * d);
    fill_random(q.span(), 1);
    kernels::AttentionWorkspace ws;
    auto& ex = bench::pool(threads);
    std::size_t i = 0;
    bench::run_with_stream_probe(state, threads, double(kv_bytes), [&] {
        const auto kv = caches[i].view();
        i = (i + 1) % copies;
        kernels::attention(q.view(), kv_len - 1, kv, out.view(), dims, ws, ex);
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
    });
    bench::set_flops(state, 4.0 * double(kv_len) * double(d) * double(H));
}
BENCHMARK(BM_attention_decode)->ArgNames({"kv_len", "threads"})->ArgsProduct({{4096, 32768}, {1, 2}})->UseRealTime()->Unit(benchmark::kMicrosecond);
