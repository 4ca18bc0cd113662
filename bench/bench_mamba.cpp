// Mamba benchmarks: selective scan and causal conv1d kernels (ns per element is 1 / items_per_second),
// the mixer's prefill (tokens/s) and decode step with cold weights (tokens/s and weight bytes/s, to set next to
// BM_stream_read from the same binary).
#include "bench_common.hpp"

#include <hystack/layers.hpp>

#include <cmath>
#include <memory>
#include <string>
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

namespace {

hystack::MambaConfig bench_mixer_config() {
    hystack::MambaConfig c;
    c.d_model = 1024;
    c.d_inner = 2048;  // expand 2
    c.d_state = 16;
    c.d_conv = 4;
    c.dt_rank = 64;
    c.dt_bc_norm = true;  // Jamba
    return c;
}

void randomize_mixer(MambaMixer& m, unsigned seed) {
    unsigned s = seed;
    for (auto& p : m.params()) {
        fill(p.data, -0.02f, 0.02f, s++);
        if (p.name == "A_log")
            for (std::size_t i = 0; i < p.data.size(); ++i) p.data[i] = std::log(float(i % 16 + 1));
        if (p.name.find("layernorm") != std::string::npos || p.name == "D")
            for (auto& v : p.data) v = 1.0f;
        if (p.name == "dt_proj.bias")
            for (auto& v : p.data) v = -3.0f;
    }
    m.on_weights_loaded();
}

}  // namespace

// Prefill of one sequence: items = tokens.
static void BM_mamba_prefill(benchmark::State& state) {
    const std::size_t L = std::size_t(state.range(0)), threads = std::size_t(state.range(1));
    MambaMixer m(bench_mixer_config());
    randomize_mixer(m, 1);
    Matrix<float> x(L, 1024), y(L, 1024);
    fill(x.span(), -1, 1, 9);
    MambaState st = m.make_state();
    auto& ex = bench::pool(threads);
    for (auto _ : state) {
        st.reset();
        m.prefill(x.view(), st, y.view(), ex);
        benchmark::DoNotOptimize(y.data());
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L));
    const auto& c = m.config();
    const double flops = 2.0 * double(L) * double(c.d_model * 2 * c.d_inner + c.d_inner * (c.dt_rank + 2 * c.d_state) +
                                                  c.dt_rank * c.d_inner + c.d_inner * c.d_model);
    bench::set_flops(state, flops);
}
BENCHMARK(BM_mamba_prefill)
    ->ArgNames({"L", "threads"})
    ->ArgsProduct({{512, 4096}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Decode step with cold weights: steps rotate over enough mixer copies (~25 MB of weights each) that the weights of
// the one stepping are out of cache. items = tokens; bytes = weight bytes read.
static void BM_mamba_step(benchmark::State& state) {
    const std::size_t threads = std::size_t(state.range(0));
    static std::vector<std::unique_ptr<MambaMixer>> mixers;
    static std::vector<MambaState> states;
    if (mixers.empty()) {
        std::size_t total = 0;
        while (total < (std::size_t(160) << 20)) {
            mixers.push_back(std::make_unique<MambaMixer>(bench_mixer_config()));
            randomize_mixer(*mixers.back(), unsigned(mixers.size()));
            states.push_back(mixers.back()->make_state());
            total += mixers.back()->weight_bytes();
        }
    }
    std::vector<float> x(1024), y(1024);
    fill(x, -1, 1, 3);
    auto& ex = bench::pool(threads);
    for (std::size_t i = 0; i < mixers.size(); ++i) mixers[i]->step(x, states[i], y, ex);  // warm-up (scratch)
    std::size_t i = 0;
    bench::run_with_stream_probe(state, threads, double(mixers[0]->weight_bytes()), [&] {
        mixers[i]->step(x, states[i], y, ex);
        benchmark::DoNotOptimize(y.data());
        i = i + 1 == mixers.size() ? 0 : i + 1;
    });
    state.SetItemsProcessed(std::int64_t(state.iterations()));
    state.counters["mixers"] = double(mixers.size());
}
BENCHMARK(BM_mamba_step)->ArgNames({"threads"})->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
