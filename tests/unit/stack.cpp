// Stack: ratio schedules and placement, run-time schedules from HF periods, the decoder-layer
// wiring, per-sequence state (fork, save/restore, errors), snapshots, memory report. Uses toy
// layers with the layer contract's interface so the stack's own logic is tested in isolation.
#include <hystack/stack.hpp>
#include <hystack/model.hpp>

#include <cstring>
#include <random>
#include <vector>

#include "catch.hpp"
#include "unit/toy_layers.hpp"

using namespace hystack;

namespace {
using ToyStack = toy::Stack;
template <class R, class P = JambaPlacement>
using ToyHybrid = toy::Hybrid<R, P>;

void fill(ParamList params, std::uint64_t seed) {
    randomize_params(params, seed);
    for (auto& p : params)  // keep the toy recurrence stable
        for (auto& v : p.data) v *= 0.5f;
}
Matrix<float> random_rows(std::size_t L, std::size_t d, unsigned seed) {
    Matrix<float> m(L, d);
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto& v : m.span()) v = u(g);
    return m;
}
bool same(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}
}  // namespace

// --- compile-time ratios -------------------------------------------------------------------------
using R18 = RatioSchedule<std::ratio<1, 8>>;
static_assert(R18::period == 8 && R18::attention_per_period == 1);
static_assert(R18::mixer(4) == MixerKind::attention && R18::mixer(12) == MixerKind::attention);
static_assert(R18::mixer(0) == MixerKind::mamba && R18::mixer(3) == MixerKind::mamba && R18::mixer(5) == MixerKind::mamba);
static_assert(RatioSchedule<std::ratio<0, 8>>::pure_mamba);
static_assert(RatioSchedule<std::ratio<8, 8>>::pure_attention);  // std::ratio reduces 8/8 to 1/1
static_assert(RatioSchedule<std::ratio<2, 16>>::period == 8);     // and 2/16 to 1/8
static_assert(!is_valid_ratio<std::ratio<9, 8>>);                 // HybridStack<ratio<9, 8>> does not compile
static_assert(!is_valid_ratio<std::ratio<-1, 8>>);
static_assert(is_valid_ratio<std::ratio<0, 1>> && is_valid_ratio<std::ratio<1, 1>>);
static_assert(RatioSchedule<std::ratio<1, 8>, FrontPlacement>::mixer(0) == MixerKind::attention);
static_assert(RatioSchedule<std::ratio<1, 8>, BackPlacement>::mixer(7) == MixerKind::attention);
static_assert(ToyHybrid<std::ratio<1, 8>>::mixer(4) == MixerKind::attention);

TEST_CASE("ratios place A attention layers per period, Jamba's in the middle", "[stack]") {
    FeedForwardSchedule ff{2, 1, 8};
    auto s = Schedule::from_ratio<std::ratio<1, 8>>(16, ff);
    CHECK(s.indices(MixerKind::attention) == std::vector<std::size_t>{4, 12});
    CHECK(s.count(MixerKind::mamba) == 14);
    CHECK(s.count(FeedForwardKind::moe) == 8);
    CHECK(s.compact() == "mMmMaMmMmMmMaMmM");
    // 3 per 8: offsets 4, 6 and 1, exactly three per period.
    auto s3 = Schedule::from_ratio<std::ratio<3, 8>>(16, ff);
    CHECK(s3.indices(MixerKind::attention) == std::vector<std::size_t>{1, 4, 6, 9, 12, 14});
    CHECK(Schedule::from_ratio<std::ratio<0, 1>>(5, ff).count(MixerKind::attention) == 0);
    CHECK(Schedule::from_ratio<std::ratio<1, 1>>(5, ff).count(MixerKind::mamba) == 0);
    CHECK(Schedule::from_ratio<std::ratio<1, 4>, FrontPlacement>(8, ff).indices(MixerKind::attention) ==
          std::vector<std::size_t>{0, 4});
    // Dense everywhere with one expert.
    CHECK(Schedule::from_ratio<std::ratio<1, 8>>(8, {2, 1, 1}).count(FeedForwardKind::moe) == 0);
    CHECK(s.describe().find("attention at {4, 12}") != std::string::npos);
}

TEST_CASE("run-time schedules follow HF's attn/expert periods and offsets", "[stack]") {
    auto s = Schedule::from_periods(8, 8, 4, {2, 1, 4});
    CHECK(s == Schedule::from_ratio<std::ratio<1, 8>>(8, {2, 1, 4}));
    auto t = Schedule::from_periods(6, 3, 0, {3, 2, 4});
    CHECK(t.compact() == "amMamM");
    CHECK_ERROR("attn_layer_period must be > 0", Schedule::from_periods(8, 0, 0, {}));
}

TEST_CASE("a compile-time stack rejects a config that disagrees with its ratio", "[stack]") {
    auto c = toy::config(16);
    CHECK_NOTHROW(ToyHybrid<std::ratio<1, 8>>(c));  // no HF layout given: the ratio decides
    c.attn_layer_period = 8;
    c.attn_layer_offset = 4;
    ToyHybrid<std::ratio<1, 8>> ok(c);
    CHECK(ok.schedule().indices(MixerKind::attention) == std::vector<std::size_t>{4, 12});
    c.attn_layer_offset = 3;
    CHECK_ERROR("HybridStack<1:8>: the config puts attention at layers {3, 11} (attn_layer_period 8, "
                         "attn_layer_offset 3), the ratio 1:8 puts it at {4, 12}", ToyHybrid<std::ratio<1, 8>>(c));
    c.attn_layer_period = 4;
    c.attn_layer_offset = 0;
    CHECK_ERROR("{0, 4, 8, 12}", ToyHybrid<std::ratio<1, 8>>(c));
    // The run-time stack takes any layout.
    ToyStack rt(c);
    CHECK(rt.schedule().count(MixerKind::attention) == 4);
    // Config errors.
    auto bad = toy::config(8);
    bad.d_model = 0;
    CHECK_ERROR("d_model must be > 0", ToyHybrid<std::ratio<1, 8>>(bad));
    bad = toy::config(8);
    bad.num_attention_heads = 3;
    CHECK_ERROR("not a multiple of num_attention_heads", ToyHybrid<std::ratio<1, 8>>(bad));
    bad = toy::config(8);
    bad.num_experts_per_tok = 5;
    CHECK_ERROR("num_experts_per_tok 5", ToyHybrid<std::ratio<1, 8>>(bad));
    CHECK_ERROR("attn_layer_period must be > 0", ToyStack(toy::config(8)));
}

TEST_CASE("params carry HF names under layers.{i}", "[stack]") {
    ToyHybrid<std::ratio<1, 8>> s(toy::config(8));
    auto p = s.params();
    REQUIRE(p.size() == 8 * 4);
    CHECK(p[0].name == "layers.0.mamba.w.weight");
    CHECK(p[1].name == "layers.0.feed_forward.down_proj.weight");
    CHECK(p[2].name == "layers.0.input_layernorm.weight");
    CHECK(p[3].name == "layers.0.pre_ff_layernorm.weight");
    CHECK(p[5].name == "layers.1.feed_forward.router.weight");
    CHECK(p[16].name == "layers.4.self_attn.q_proj.weight");
    CHECK(p[2].shape == std::vector<std::size_t>{8});
    CHECK(p[2].data.data() == s.block(0).mixer_norm.weight().data());
}

TEST_CASE("decoder layer: x += mixer(norm(x)); x += ff(norm(x))", "[stack]") {
    auto c = toy::config(1, 8);
    c.attn_layer_period = 2;
    c.attn_layer_offset = 1;  // layer 0: mamba, dense
    ToyStack s(c);
    fill(s.params(), 3);
    auto x = random_rows(3, 8, 1);
    Matrix<float> ref = x;
    auto st = s.make_state(16);
    s.prefill(x.view(), st);
    // Reference with the toy layer directly.
    auto rs = s.mixer_as<toy::Rec>(0)->make_state();
    Matrix<float> h(1, 8), y(1, 8);
    SerialExecutor ex;
    for (std::size_t r = 0; r < 3; ++r) {
        kernels::rmsnorm_row(ref.row(r), s.block(0).mixer_norm.weight().data(), h.data(), 8, c.rms_norm_eps);
        s.mixer_as<toy::Rec>(0)->prefill(MatrixView<const float>(h.view()), rs, y.view(), ex);
        for (int i = 0; i < 8; ++i) ref(r, i) += y(0, i);
        kernels::rmsnorm_row(ref.row(r), s.block(0).ff_norm.weight().data(), h.data(), 8, c.rms_norm_eps);
        s.feed_forward_as<toy::FF>(0)->prefill(MatrixView<const float>(h.view()), y.view(), ex);
        for (int i = 0; i < 8; ++i) ref(r, i) += y(0, i);
    }
    CHECK(same(x.span(), ref.span()));
    CHECK(st.length() == 3);
}

TEST_CASE("prefill, chunked prefill, steps and batched steps agree bit for bit", "[stack]") {
    ToyHybrid<std::ratio<1, 4>> s(toy::config(8, 8));
    fill(s.params(), 5);
    const auto x = random_rows(7, 8, 2);
    auto st1 = s.make_state(16), st2 = s.make_state(16), st3 = s.make_state(16);
    Matrix<float> a = x;
    s.prefill(a.view(), st1);
    Matrix<float> b = x;
    s.prefill(b.view().rows_slice(0, 3), st2);
    s.prefill(b.view().rows_slice(3, 4), st2);
    CHECK(same(a.span(), b.span()));
    Matrix<float> c = x;
    for (std::size_t r = 0; r < 7; ++r) s.step(std::span<float>(c.row(r), 8), st3);
    CHECK(same(a.span(), c.span()));
    // Batched: two sequences, one token each, equal to stepping each alone.
    auto f1 = st1, f2 = st1;
    auto s1 = st1;
    const auto t = random_rows(2, 8, 9);
    Matrix<float> tb = t;
    std::vector<ToyStack::State*> ptrs{&f1, &f2};
    ThreadPool pool(2);
    s.step_batch(tb.view(), std::span<ToyStack::State* const>(ptrs), pool);
    Matrix<float> one = t;
    s.step(std::span<float>(one.row(1), 8), s1);
    CHECK(same(tb.view().row_span(1), one.view().row_span(1)));
    CHECK(f1.length() == 8);
    CHECK_ERROR("Stack::step_batch: x: expected [2, 8], got [1, 8]", s.step_batch(tb.view().rows_slice(0, 1), std::span<ToyStack::State* const>(ptrs), pool));
}

TEST_CASE("state: copies fork, bytes add up, save/restore continues bit for bit", "[stack]") {
    ToyHybrid<std::ratio<1, 8>> s(toy::config(8, 8));
    fill(s.params(), 6);
    auto st = s.make_state(32);
    CHECK(st.bytes() == 7 * 8 * 4 + 32 * 8 * 4);
    CHECK(st.num_layers() == 8);
    Matrix<float> p = random_rows(5, 8, 3);
    s.prefill(p.view(), st);
    auto fork = st;  // fork after a shared prompt
    const auto saved = st.to_bytes();
    auto restored = s.make_state(32);
    restored.from_bytes(saved);
    CHECK(restored.length() == 5);
    const auto t = random_rows(4, 8, 4);
    Matrix<float> a = t, b = t, c = t;
    for (std::size_t r = 0; r < 4; ++r) {
        s.step(std::span<float>(a.row(r), 8), st);
        s.step(std::span<float>(b.row(r), 8), fork);
        s.step(std::span<float>(c.row(r), 8), restored);
    }
    CHECK(same(a.span(), b.span()));
    CHECK(same(a.span(), c.span()));
    CHECK(st.to_bytes() == restored.to_bytes());
    // reset() starts over.
    st.reset();
    CHECK(st.length() == 0);
}

TEST_CASE("state restore checks header, layers, sizes and leaves the state alone on error", "[stack]") {
    ToyHybrid<std::ratio<1, 8>> s(toy::config(8, 8));
    auto st = s.make_state(8);
    Matrix<float> p = random_rows(2, 8, 3);
    s.prefill(p.view(), st);
    const auto good = st.to_bytes();
    auto target = s.make_state(8);
    const auto before = target.to_bytes();

    auto bad = good;
    bad[0] = std::byte(0);
    CHECK_ERROR("not a hystack state", target.from_bytes(bad));
    bad = good;
    bad[8] = std::byte(9);
    CHECK_ERROR("unsupported state format version 9", target.from_bytes(bad));
    bad = good;
    bad.resize(good.size() - 3);
    CHECK_ERROR("truncated", target.from_bytes(bad));
    bad = good;
    bad.push_back(std::byte(1));
    CHECK_ERROR("1 trailing bytes", target.from_bytes(bad));
    CHECK_ERROR("truncated state", target.from_bytes(std::span<const std::byte>()));
    CHECK(target.to_bytes() == before);  // untouched by the failures

    // A state of another shape: other layer count, other layout, other capacity.
    ToyHybrid<std::ratio<1, 8>> s16(toy::config(16, 8));
    auto other = s16.make_state(8);
    CHECK_ERROR("state has 8 layers, the stack has 16", other.from_bytes(good));
    ToyHybrid<std::ratio<1, 8>, FrontPlacement> front(toy::config(8, 8));
    auto fs = front.make_state(8);
    CHECK_ERROR("layer 0: saved a 'mamba1' state, the stack has 'attention'", fs.from_bytes(good));
    auto small = s.make_state(4);
    CHECK_ERROR("capacity 8, expected 4", small.from_bytes(good));
    // Using a state with a stack it does not belong to.
    Matrix<float> x1 = random_rows(1, 8, 1);
    CHECK_ERROR("Stack::prefill: state has 8 layers, the stack has 16", s16.prefill(x1.view(), st));
    CHECK_ERROR("Stack::step: state has 8 layers", s16.step(x1.view().row_span(0), st));
    Matrix<float> wrong(1, 5);
    CHECK_ERROR("Stack::prefill: x: expected [*, 8], got [1, 5]", s.prefill(wrong.view(), st));
}

TEST_CASE("snapshots every N tokens roll generation back exactly", "[stack]") {
    ModelConfig mc;
    mc.vocab_size = 16;
    mc.stack = toy::config(8, 8);
    BasicCausalLM<ToyHybrid<std::ratio<1, 8>>> lm(mc);
    fill(lm.params(), 8);
    using State = decltype(lm)::State;
    auto st = lm.make_state(64);
    Snapshots<State> snaps(4);
    std::vector<token_id> hist;
    std::vector<std::vector<float>> logits_at;  // logits after token i
    SerialExecutor ex;
    for (token_id t = 0; t < 14; ++t) {
        auto l = lm.step(t % 16, st, ex);
        hist.push_back(t % 16);
        logits_at.emplace_back(l.begin(), l.end());
        snaps.maybe_save(st);
    }
    CHECK(snaps.size() == 3);  // at 4, 8, 12
    CHECK(snaps.at_or_before(11)->length() == 8);
    CHECK(snaps.at_or_before(3) == nullptr);
    // Roll back to 6 tokens: the logits after token 6 are those we had, and so is the state.
    auto l6 = lm.rollback(st, snaps, hist, 6, ex);
    CHECK(st.length() == 6);
    CHECK(same(l6, logits_at[5]));
    CHECK(snaps.size() == 1);
    // Continue differently, then roll back before the first snapshot.
    hist.resize(6);
    lm.step(9, st, ex);
    hist.push_back(9);
    auto l2 = lm.rollback(st, snaps, hist, 2, ex);
    CHECK(same(l2, logits_at[1]));
    CHECK(snaps.empty());
    CHECK_ERROR("history has 7 tokens, the state has seen 2", lm.rollback(st, snaps, hist, 2, ex));
    hist.resize(2);
    CHECK_ERROR("target 3 not in [1, 2]", lm.rollback(st, snaps, hist, 3, ex));
    CHECK_ERROR("at least 1 token", Snapshots<State>(0));
    // A bounded ring keeps the newest.
    Snapshots<State> ring(1, 2);
    auto s2 = lm.make_state(64);
    for (token_id t = 0; t < 5; ++t) {
        lm.step(t, s2, ex);
        ring.maybe_save(s2);
    }
    CHECK(ring.size() == 2);
    CHECK(ring.at_or_before(100)->length() == 5);
    CHECK(ring.at_or_before(3) == nullptr);
    CHECK(ring.bytes() == 2 * s2.bytes());
}

TEST_CASE("memory report: KV grows with the context, SSM does not", "[stack]") {
    auto c = toy::config(16, 8);
    ToyHybrid<std::ratio<1, 8>> s(c);
    auto r = s.memory_report(4096);
    CHECK(r.attention_layers == 2);
    CHECK(r.mamba_layers == 14);
    // KV: 2 * kv_heads(1) * head_dim(4) * 4096 * 4 bytes per attention layer.
    CHECK(r.kv_bytes == 2 * (2 * 1 * 4 * 4096 * 4));
    CHECK(r.ssm_bytes == 14 * 8 * 4);
    CHECK(r.total_bytes == r.kv_bytes + r.ssm_bytes);
    CHECK(r.all_attention_kv_bytes == 16 * (2 * 1 * 4 * 4096 * 4));
    CHECK(r.saving() > 7.0);
    CHECK(r.to_string().find("context 4096") != std::string::npos);
    CHECK(MemoryReport::human(3u << 20) == "3.000 MiB");
    auto w = c;
    w.sliding_window = 1024;
    ToyHybrid<std::ratio<1, 8>> sw(w);
    CHECK(sw.memory_report(4096).kv_bytes == 2 * (2 * 1 * 4 * 1024 * 4));
    // A window cache allocates its W slots up front, whatever the context.
    CHECK(sw.memory_report(512).kv_bytes == 2 * (2 * 1 * 4 * 1024 * 4));
}
