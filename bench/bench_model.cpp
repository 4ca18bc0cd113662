// Whole-model benchmarks on J1 (vocab 256, d_model 1024, 16 layers, 1:8 attention:Mamba with
// attention at layers 4 and 12, MoE with 8 experts top-2 at odd layers, dense SwiGLU 2816
// elsewhere, 16 heads / 4 kv heads, d_state 16, d_conv 4, expand 2, dt_rank 64), its weight matrices
// in the type the last argument names (0 f32, 1 bf16, 2 q8_0: the same random model, converted).
//   BM_model_prefill: 512 tokens from a fresh state (items = tokens).
//   BM_model_decode: one token at 512 tokens of context (items = tokens; bytes = weights read per
//   token, so bytes_per_second compares with BM_stream_read). Counters: bound_tokens_per_s =
//   streaming read bandwidth (probed between the iterations, same threads: bench::stream_probe) /
//   weight bytes per token, and pct_of_bound = achieved / bound (median of per-iteration ratios).
#include <hystack/hystack.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

#include "bench_common.hpp"

using namespace hystack;

namespace {

using J1 = BasicCausalLM<HybridStack<std::ratio<1, 8>>>;

J1& j1(std::int64_t type = 0) {
    static std::unique_ptr<J1> lm[3];
    auto& m = lm[std::size_t(type)];
    if (!m) {
        ModelConfig cfg = presets::j1();
        cfg.stack.weights = DType(std::uint8_t(type));
        m = std::make_unique<J1>(cfg);
        randomize_params(m->params(), 42, bench::pool(2));
        m->on_weights_loaded();
    }
    return *m;
}

std::vector<token_id> prompt(std::size_t n) {
    std::vector<token_id> ids(n);
    for (std::size_t i = 0; i < n; ++i) ids[i] = token_id((i * 37 + 11) % 256);
    return ids;
}

}  // namespace

static void BM_model_prefill(benchmark::State& state) {
    const std::size_t L = std::size_t(state.range(0)), threads = std::size_t(state.range(1));
    auto& lm = j1(state.range(2));
    state.SetLabel(to_string(DType(std::uint8_t(state.range(2)))));
    auto& ex = bench::pool(threads);
    const auto ids = prompt(L);
    auto st = lm.make_state(L + 1);
    for (auto _ : state) {
        st.reset();
        auto logits = lm.prefill(ids, st, ex);
        benchmark::DoNotOptimize(logits.data());
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(L));
    state.counters["tokens_per_s"] = benchmark::Counter(double(state.iterations()) * double(L), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_model_prefill)
    ->ArgNames({"tokens", "threads", "type"})
    ->ArgsProduct({{512}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

static void BM_model_decode(benchmark::State& state) {
    const std::size_t ctx = std::size_t(state.range(0)), threads = std::size_t(state.range(1));
    auto& lm = j1(state.range(2));
    state.SetLabel(to_string(DType(std::uint8_t(state.range(2)))));
    auto& ex = bench::pool(threads);
    auto base = lm.make_state(ctx + 2);
    lm.prefill(prompt(ctx), base, ex);
    auto st = base;
    token_id t = 65;
    lm.step(t, st, ex);  // warm the decode scratch
    const double bytes = double(lm.weight_bytes_per_token());
    auto probe = bench::stream_probe(threads);
    for (auto _ : state) {
        state.PauseTiming();
        st = base;  // back to `ctx` tokens of context (same-size copy: no allocation)
        probe.probe();
        state.ResumeTiming();
        const auto t0 = std::chrono::steady_clock::now();
        auto logits = lm.step(t, st, ex);
        benchmark::DoNotOptimize(logits.data());
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        probe.add(bytes, s);
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()));
    state.SetBytesProcessed(std::int64_t(double(state.iterations()) * bytes));
    probe.report(state);
    state.counters["weight_MB_per_token"] = bytes / 1e6;
    state.counters["tokens_per_s"] = benchmark::Counter(double(state.iterations()), benchmark::Counter::kIsRate);
    // bound = stream bandwidth / bytes per token; pct_of_bound is pct_of_stream (same ratio)
    state.counters["bound_tokens_per_s"] = state.counters["stream_GB_per_s"].value * 1e9 / bytes;
    state.counters["pct_of_bound"] = state.counters["pct_of_stream"].value;
}
BENCHMARK(BM_model_decode)
    ->ArgNames({"context", "threads", "type"})
    ->ArgsProduct({{512}, {1, 2}, {0, 1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
