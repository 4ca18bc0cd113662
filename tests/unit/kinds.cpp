// Layer kinds: a kind registered from outside the library (its own layer and state types) runs in a
// stack and round-trips through save/restore with no edit of the stack; unknown kinds are refused;
// blocks may hold a mixer or a feed-forward alone (Nemotron-H's pattern); Granite's residual multiplier.
#include <hystack/hystack.hpp>

#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

// A mixer kind the library does not know: y = (running sum of x) * w / tokens seen.
struct MeanState {
    std::uint64_t seen = 0;
    Buffer<float> sum;  // [d]
    std::size_t bytes() const { return sum.bytes() + sizeof seen; }
    void reset() {
        seen = 0;
        sum.zero();
    }
    void save(ByteWriter& w) const {
        w.u64(seen);
        w.f32(sum.span());
    }
    void load(ByteReader& r) {
        seen = r.u64("MeanState");
        r.f32(sum.span(), "MeanState: sum");
    }
};
struct RunningMean {
    using State = MeanState;
    std::size_t d;
    Buffer<float> w;  // [d]
    explicit RunningMean(std::size_t d_) : d(d_), w(d_) {}
    ParamList params() { return {{"scale", {d}, w.span()}}; }
    State make_state() const {
        State s;
        s.sum.resize(d);
        return s;
    }
    void one(const float* x, State& st, float* y) const {
        ++st.seen;
        for (std::size_t c = 0; c < d; ++c) {
            st.sum[c] += x[c];
            y[c] = st.sum[c] * w[c] / float(st.seen);
        }
    }
    template <Executor E>
    void prefill(MatrixView<const float> x, State& st, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t r = 0; r < x.rows; ++r) one(x.row(r), st, y.row(r));
    }
    template <Executor E>
    void step_batch(MatrixView<const float> x, std::span<State* const> s, MatrixView<float> y, Workspace&, E&) const {
        for (std::size_t b = 0; b < x.rows; ++b) one(x.row(b), *s[b], y.row(b));
    }
};

KindRegistry with_mean() {
    KindRegistry r = builtin_kinds();
    r.add_mixer_type<RunningMean>("running_mean", "mean_mixer", [](const StackConfig& c, std::size_t) { return c.d_model; });
    return r;
}

StackConfig small() {
    StackConfig c;
    c.d_model = 16;
    c.num_layers = 4;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.mamba_d_state = 4;
    c.mamba_dt_rank = 2;
    c.intermediate_size = 24;
    c.num_experts = 4;
    c.num_experts_per_tok = 2;
    return c;
}

Matrix<float> rows(std::size_t L, std::size_t d, unsigned seed) {
    Matrix<float> m(L, d);
    std::mt19937 g(seed);
    std::uniform_real_distribution<float> u(-1, 1);
    for (auto& v : m.span()) v = u(g);
    return m;
}

}  // namespace

TEST_CASE("a kind registered from outside runs in a stack and round-trips through save/restore", "[kinds]") {
    const KindRegistry kinds = with_mean();
    const Schedule sched({{"running_mean", "dense"}, {"mamba1", "moe"}, {"attention", "dense"}, {"running_mean", ""}});
    Stack s(small(), sched, kinds);
    randomize_params(s.params(), 3);
    s.on_weights_loaded();
    auto names = s.params();
    CHECK(names[0].name == "layers.0.mean_mixer.scale");
    CHECK(s.block(0).mixer->kind() == "running_mean");
    CHECK(s.mixer_as<RunningMean>(0) != nullptr);
    CHECK(s.mixer_as<RunningMean>(1) == nullptr);

    auto st = s.make_state(32);
    Matrix<float> p = rows(5, 16, 1);
    s.prefill(p.view(), st);
    CHECK(st.layer_as<MeanState>(0).seen == 5);
    CHECK(st.layer_as<MeanState>(3).seen == 5);
    CHECK(st.layer(0).kind() == "running_mean");
    CHECK_ERROR("holds a 'running_mean' state", st.layer_as<MambaState>(0));

    auto fork = st;
    const auto bytes = st.to_bytes();
    auto restored = s.make_state(32);
    restored.from_bytes(bytes);
    CHECK(restored.layer_as<MeanState>(0).seen == 5);
    Matrix<float> t = rows(4, 16, 2), a = t, b = t, c = t;
    for (std::size_t r = 0; r < 4; ++r) {
        s.step(a.view().row_span(r), st);
        s.step(b.view().row_span(r), fork);
        s.step(c.view().row_span(r), restored);
    }
    CHECK(same_bits(a.span(), b.span()));
    CHECK(same_bits(a.span(), c.span()));
    CHECK(st.to_bytes() == restored.to_bytes());

    // The saved kind names guard the load: a stack whose layer 0 is another kind refuses the bytes.
    Stack other(small(), Schedule(std::vector<LayerKind>{{"mamba1", "dense"}, {"mamba1", "moe"}, {"attention", "dense"}, {"running_mean", ""}}), kinds);
    auto os = other.make_state(32);
    CHECK_ERROR("layer 0: saved a 'running_mean' state, the stack has 'mamba1'", os.from_bytes(bytes));
}

TEST_CASE("unknown kind names are refused, naming the known ones", "[kinds]") {
    CHECK_ERROR("layer 0: unknown mixer kind 'mamba2' (known: attention, mamba1)",
                Stack(small(), Schedule(std::vector<LayerKind>{{"mamba2", "dense"}, {"mamba1", "dense"}, {"mamba1", "dense"}, {"mamba1", "dense"}})));
    CHECK_ERROR("layer 2: unknown feed-forward kind 'mlp' (known: dense, moe)",
                Stack(small(), Schedule(std::vector<LayerKind>{{"mamba1", "dense"}, {"mamba1", "dense"}, {"mamba1", "mlp"}, {"mamba1", "dense"}})));
    CHECK_ERROR("schedule has 1 layers, config 4", Stack(small(), Schedule(std::vector<LayerKind>{{"mamba1", "dense"}})));
}

TEST_CASE("blocks may hold a mixer or a feed-forward alone (a Nemotron-H pattern)", "[kinds]") {
    const std::vector<std::pair<char, LayerKind>> blocks = {
        {'M', {"mamba1", ""}}, {'-', {"", "dense"}}, {'*', {"attention", ""}}};
    const Schedule sched = Schedule::from_pattern("M-*-", blocks);
    CHECK(sched.compact() == "m-a-");
    CHECK(sched.count_mixer("mamba1") == 1);
    CHECK(sched.count_feed_forward("dense") == 2);
    CHECK_ERROR("pattern character 'E' at position 2 is not one of \"M-*\"", Schedule::from_pattern("M-E", blocks));

    Stack s(small(), sched);
    randomize_params(s.params(), 4);
    s.on_weights_loaded();
    std::vector<std::string> names;
    for (auto& p : s.params()) names.push_back(p.name);
    CHECK(std::count(names.begin(), names.end(), "layers.0.input_layernorm.weight") == 1);
    CHECK(std::count(names.begin(), names.end(), "layers.0.pre_ff_layernorm.weight") == 0);
    CHECK(std::count(names.begin(), names.end(), "layers.1.input_layernorm.weight") == 0);
    CHECK(std::count(names.begin(), names.end(), "layers.1.feed_forward.gate_proj.weight") == 1);
    CHECK(std::count(names.begin(), names.end(), "layers.2.self_attn.q_proj.weight") == 1);

    auto st = s.make_state(16);
    CHECK(st.num_layers() == 4);
    CHECK_ERROR("layer 1 has no mixer", st.layer(1));
    const auto x = rows(6, 16, 5);
    Matrix<float> a = x, b = x;
    s.prefill(a.view(), st);
    auto st2 = s.make_state(16);
    for (std::size_t r = 0; r < 6; ++r) s.step(b.view().row_span(r), st2);
    CHECK(excess(a.span(), b.span(), 1e-5, 1e-4) <= 1);
    auto restored = s.make_state(16);
    restored.from_bytes(st.to_bytes());
    CHECK(restored.to_bytes() == st.to_bytes());
}

TEST_CASE("the residual multiplier scales each branch: x += m * f(norm(x))", "[kinds]") {
    StackConfig c = small();
    c.num_layers = 1;
    c.residual_multiplier = 0.25f;
    Stack s(c, Schedule(std::vector<LayerKind>{{"mamba1", "dense"}}));
    randomize_params(s.params(), 6);
    s.on_weights_loaded();
    const auto x = rows(3, 16, 7);
    Matrix<float> got = x;
    auto st = s.make_state(8);
    s.prefill(got.view(), st);
    // The same block by hand, from the layers alone.
    Matrix<float> want = x, h(3, 16), y(3, 16);
    auto ms = s.mixer_as<MambaMixer>(0)->make_state();
    for (std::size_t r = 0; r < 3; ++r) s.block(0).mixer_norm.row(want.row(r), h.row(r));
    s.mixer_as<MambaMixer>(0)->prefill(MatrixView<const float>(h.view()), ms, y.view());
    for (std::size_t i = 0; i < want.span().size(); ++i) want.span()[i] += 0.25f * y.span()[i];
    for (std::size_t r = 0; r < 3; ++r) s.block(0).ff_norm.row(want.row(r), h.row(r));
    s.feed_forward_as<SwiGLU>(0)->prefill(MatrixView<const float>(h.view()), y.view());
    for (std::size_t i = 0; i < want.span().size(); ++i) want.span()[i] += 0.25f * y.span()[i];
    CHECK(same_bits(got.span(), want.span()));
}

TEST_CASE("a ratio's compile-time mixer(i) and the built stack name the same kinds", "[kinds]") {
    using H = HybridStack<std::ratio<1, 4>>;
    static_assert(H::mixer(2) == MixerKind::attention && H::mixer(3) == MixerKind::mamba);
    StackConfig c = small();
    H s(c);
    for (std::size_t i = 0; i < s.num_layers(); ++i) CHECK(s.block(i).mixer->kind() == kind_name(H::mixer(i)));
}
