// MambaMixer: against a plain double-precision reference of the whole block (plain Mamba and Jamba's dt/B/C norms,
// with and without biases), prefill(L1) + steps == prefill(L1 + S), batched steps == each alone, threads,
// state value semantics and serialisation, no allocation in step, parameters, errors.
#include <hystack/layers.hpp>

#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

#if __has_include(<catch2/catch_all.hpp>)
using Catch::Matchers::ContainsSubstring;
#else
inline auto ContainsSubstring(const std::string& s) { return Catch::Matchers::Contains(s); }
#endif

MambaConfig small_config(bool jamba, bool biases = false) {
    MambaConfig c;
    c.d_model = 24;
    c.d_inner = 40;  // two SIMD blocks of 16 and a scalar tail of 8
    c.d_state = 16;
    c.d_conv = 4;
    c.dt_rank = 3;
    c.dt_bc_norm = jamba;
    c.rms_norm_eps = 1e-6f;
    c.conv_bias = true;
    c.proj_bias = biases;
    return c;
}

// Mamba-like random weights: A_log = log(1..N), dt_bias so softplus gives 1e-3..1e-1, scaled projections.
void randomize(MambaMixer& m, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> U(-1, 1);
    const auto& c = m.config();
    for (auto& p : m.params()) {
        const std::string& n = p.name;
        float scale = 1;
        if (n == "in_proj.weight") scale = 1.0f / std::sqrt(float(c.d_model));
        if (n == "x_proj.weight" || n == "out_proj.weight") scale = 1.0f / std::sqrt(float(c.d_inner));
        if (n == "dt_proj.weight") scale = 1.0f / std::sqrt(float(c.dt_rank));
        if (n == "conv1d.weight") scale = 0.5f;
        for (std::size_t i = 0; i < p.data.size(); ++i) {
            float v = scale * U(rng);
            if (n == "A_log") v = std::log(float(i % c.d_state + 1));
            if (n == "dt_proj.bias") v = std::log(std::expm1(std::exp(-4.6f + 2.3f * (U(rng) + 1))));
            if (n == "D") v = 1 + 0.5f * U(rng);
            if (n.find("layernorm") != std::string::npos) v = 1 + 0.3f * U(rng);
            p.data[i] = v;
        }
    }
    m.on_weights_loaded();
}

std::map<std::string, std::vector<float>> weights_of(MambaMixer& m) {
    std::map<std::string, std::vector<float>> w;
    for (auto& p : m.params()) w[p.name].assign(p.data.begin(), p.data.end());
    return w;
}

// The block in double, straight from the formulas (HF JambaMambaMixer.slow_forward / mamba_simple), from a zero state.
std::vector<double> reference_block(MambaMixer& m, const Matrix<float>& x) {
    const auto c = m.config();
    auto w = weights_of(m);
    const std::size_t L = x.rows(), dm = c.d_model, di = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
    auto get = [&](const std::string& n) -> const std::vector<float>& { return w[n]; };
    std::vector<double> xin(L * di), z(L * di), out(L * dm, 0.0);
    for (std::size_t t = 0; t < L; ++t)
        for (std::size_t o = 0; o < 2 * di; ++o) {
            double s = c.proj_bias ? get("in_proj.bias")[o] : 0.0;
            for (std::size_t i = 0; i < dm; ++i) s += double(get("in_proj.weight")[o * dm + i]) * x(t, i);
            (o < di ? xin[t * di + o] : z[t * di + o - di]) = s;
        }
    std::vector<double> h(di * N, 0.0);
    auto silu = [](double v) { return v / (1 + std::exp(-v)); };
    auto rms = [&](std::vector<double>& v, std::size_t off, std::size_t n, const std::vector<float>& g) {
        double ss = 0;
        for (std::size_t i = 0; i < n; ++i) ss += v[off + i] * v[off + i];
        const double inv = 1 / std::sqrt(ss / double(n) + c.rms_norm_eps);
        for (std::size_t i = 0; i < n; ++i) v[off + i] *= inv * g[i];
    };
    for (std::size_t t = 0; t < L; ++t) {
        std::vector<double> u(di), dbl(R + 2 * N, 0.0), y(di);
        for (std::size_t d = 0; d < di; ++d) {
            double s = c.conv_bias ? get("conv1d.bias")[d] : 0.0;
            for (std::size_t k = 0; k < K; ++k)
                if (t + k >= K - 1) s += double(get("conv1d.weight")[d * K + k]) * xin[(t + k - (K - 1)) * di + d];
            u[d] = silu(s);
        }
        for (std::size_t o = 0; o < R + 2 * N; ++o)
            for (std::size_t d = 0; d < di; ++d) dbl[o] += double(get("x_proj.weight")[o * di + d]) * u[d];
        if (c.dt_bc_norm) {
            rms(dbl, 0, R, get("dt_layernorm.weight"));
            rms(dbl, R, N, get("b_layernorm.weight"));
            rms(dbl, R + N, N, get("c_layernorm.weight"));
        }
        for (std::size_t d = 0; d < di; ++d) {
            double dv = get("dt_proj.bias")[d];
            for (std::size_t r = 0; r < R; ++r) dv += double(get("dt_proj.weight")[d * R + r]) * dbl[r];
            const double dt = dv > 20 ? dv : std::log1p(std::exp(dv));
            double yy = 0;
            for (std::size_t n = 0; n < N; ++n) {
                const double A = -std::exp(double(get("A_log")[d * N + n]));
                h[d * N + n] = std::exp(dt * A) * h[d * N + n] + dt * dbl[R + n] * u[d];
                yy += h[d * N + n] * dbl[R + N + n];
            }
            y[d] = (yy + get("D")[d] * u[d]) * silu(z[t * di + d]);
        }
        for (std::size_t o = 0; o < dm; ++o) {
            double s = c.proj_bias ? get("out_proj.bias")[o] : 0.0;
            for (std::size_t d = 0; d < di; ++d) s += double(get("out_proj.weight")[o * di + d]) * y[d];
            out[t * dm + o] = s;
        }
    }
    return out;
}

Matrix<float> random_input(std::size_t L, std::size_t dm, unsigned seed) {
    Matrix<float> x(L, dm);
    std::mt19937 rng(seed);
    std::normal_distribution<float> Nd(0, 1);
    for (auto& v : x.span()) v = Nd(rng);
    return x;
}

double max_excess(std::span<const float> got, std::span<const float> want, double tol) {
    return excess(got, want, tol, tol);
}


}  // namespace

TEST_CASE("MambaMixer prefill matches a double-precision reference of the block", "[mamba]") {
    for (bool jamba : {false, true})
        for (bool biases : {false, true}) {
            MambaConfig cfg = small_config(jamba, biases);
            cfg.conv_bias = !biases;  // exercise both with and without the conv bias
            MambaMixer m(cfg);
            randomize(m, 7);
            const auto x = random_input(300, cfg.d_model, 3);  // > prefill_chunk: two chunks
            MambaState st = m.make_state();
            Matrix<float> y(300, cfg.d_model);
            m.prefill(x.view(), st, y.view());
            const auto ref = reference_block(m, x);
            std::vector<float> reff(ref.begin(), ref.end());
            INFO("jamba=" << jamba << " biases=" << biases);
            CHECK(max_excess(y.span(), reff, 1e-4) <= 1);
        }
}

TEST_CASE("MambaMixer: prefill(L1) then steps equals prefill(L1 + S)", "[mamba]") {
    for (bool jamba : {false, true}) {
        MambaConfig cfg = small_config(jamba);
        MambaMixer m(cfg);
        randomize(m, 11);
        const std::size_t S = 6;
        for (std::size_t L1 : {0, 1, 2, 3, 10, 260}) {
            const auto x = random_input(L1 + S, cfg.d_model, unsigned(L1 + 1));
            MambaState full = m.make_state();
            Matrix<float> yf(L1 + S, cfg.d_model);
            m.prefill(x.view(), full, yf.view());
            MambaState st = m.make_state();
            Matrix<float> y(L1 + S, cfg.d_model);
            m.prefill(x.view().rows_slice(0, L1), st, y.view().rows_slice(0, L1));
            for (std::size_t t = L1; t < L1 + S; ++t) m.step(x.view().row_span(t), st, y.view().row_span(t));
            INFO("jamba=" << jamba << " L1=" << L1);
            CHECK(max_excess(y.span(), yf.span(), 1e-5) <= 1);
            CHECK(max_excess({st.ssm().data, cfg.d_inner * cfg.d_state}, {full.ssm().data, cfg.d_inner * cfg.d_state}, 1e-5) <= 1);
            CHECK(max_excess({st.conv().data, 3 * cfg.d_inner}, {full.conv().data, 3 * cfg.d_inner}, 1e-5) <= 1);
        }
    }
}

TEST_CASE("MambaMixer: a batched step equals each sequence stepped alone; 1 and 2 threads agree bit for bit", "[mamba]") {
    MambaConfig cfg = small_config(true);
    MambaMixer m(cfg);
    randomize(m, 5);
    ThreadPool pool(2);
    const std::size_t Bn = 3, L = 7;
    std::vector<MambaState> alone, batched;
    for (std::size_t b = 0; b < Bn; ++b) {
        const auto x = random_input(L + b, cfg.d_model, unsigned(20 + b));  // different lengths
        MambaState st = m.make_state();
        Matrix<float> y(L + b, cfg.d_model);
        m.prefill(x.view(), st, y.view());
        alone.push_back(st);
        batched.push_back(st);
    }
    std::vector<MambaState*> ptrs;
    for (auto& s : batched) ptrs.push_back(&s);
    for (std::size_t s = 0; s < 4; ++s) {
        const auto x = random_input(Bn, cfg.d_model, unsigned(100 + s));
        Matrix<float> yb(Bn, cfg.d_model), ya(Bn, cfg.d_model);
        m.step_batch(x.view(), ptrs, yb.view(), pool);
        for (std::size_t b = 0; b < Bn; ++b) m.step(x.view().row_span(b), alone[b], ya.view().row_span(b));
        CHECK(max_excess(yb.span(), ya.span(), 1e-5) <= 1);
    }
    for (std::size_t b = 0; b < Bn; ++b) {
        CHECK(max_excess({batched[b].ssm().data, cfg.d_inner * cfg.d_state}, {alone[b].ssm().data, cfg.d_inner * cfg.d_state},
                         1e-5) <= 1);
        CHECK(max_excess({batched[b].conv().data, 3 * cfg.d_inner}, {alone[b].conv().data, 3 * cfg.d_inner}, 1e-5) <= 1);
    }
    // Threads: the same prefill and steps on 1 and 2 threads.
    MambaConfig big = small_config(true);
    big.d_inner = 256;
    MambaMixer mb(big);
    randomize(mb, 9);
    const auto x = random_input(40, big.d_model, 1);
    MambaState s1 = mb.make_state(), s2 = mb.make_state();
    Matrix<float> y1(40, big.d_model), y2(40, big.d_model);
    SerialExecutor serial;
    mb.prefill(x.view().rows_slice(0, 30), s1, y1.view().rows_slice(0, 30), serial);
    mb.prefill(x.view().rows_slice(0, 30), s2, y2.view().rows_slice(0, 30), pool);
    for (std::size_t t = 30; t < 40; ++t) {
        mb.step(x.view().row_span(t), s1, y1.view().row_span(t), serial);
        mb.step(x.view().row_span(t), s2, y2.view().row_span(t), pool);
    }
    CHECK(same_bits(y1.span(), y2.span()));
    CHECK(same_bits({s1.ssm().data, 256 * 16}, {s2.ssm().data, 256 * 16}));
}

TEST_CASE("MambaMixer: y may alias x in prefill and step", "[mamba]") {
    MambaMixer m(small_config(false));
    randomize(m, 2);
    auto x = random_input(12, 24, 4);
    MambaState a = m.make_state(), b = m.make_state();
    Matrix<float> y(12, 24);
    m.prefill(x.view(), a, y.view());
    m.prefill(x.view(), b, x.view());
    CHECK(same_bits(x.span(), y.span()));
    std::vector<float> v(24, 0.5f), w(24);
    m.step(v, a, w);
    m.step(v, b, v);
    CHECK(same_bits(v, w));
}

TEST_CASE("MambaState: bytes, reset, copy forks, save/load round trip, load rejects mismatches", "[mamba]") {
    MambaConfig cfg = small_config(false);
    MambaMixer m(cfg);
    randomize(m, 3);
    MambaState st = m.make_state();
    CHECK(st.bytes() == (3 * 40 + 40 * 16) * sizeof(float));
    const auto x = random_input(9, 24, 8);
    Matrix<float> y(9, 24);
    m.prefill(x.view(), st, y.view());
    // Copy forks: both continue identically, and independently of each other.
    MambaState fork = st;
    std::vector<float> a(24), b(24), c(24);
    m.step(x.view().row_span(0), st, a);
    m.step(x.view().row_span(0), fork, b);
    CHECK(same_bits(a, b));
    m.step(x.view().row_span(1), st, a);
    // Save/load.
    std::vector<std::byte> bytes;
    ByteWriter w(bytes);
    st.save(w);
    MambaState loaded = m.make_state();
    ByteReader r(bytes);
    loaded.load(r);
    CHECK(r.remaining() == 0);
    m.step(x.view().row_span(2), st, a);
    m.step(x.view().row_span(2), loaded, c);
    CHECK(same_bits(a, c));
    // Mismatched dimensions and truncation throw.
    MambaConfig other = cfg;
    other.d_state = 8;
    MambaState wrong = MambaMixer(other).make_state();
    ByteReader r2(bytes);
    CHECK_THROWS_WITH(wrong.load(r2), ContainsSubstring("MambaState: expected d_inner 40, d_state 8"));
    ByteReader r3(std::span<const std::byte>(bytes.data(), bytes.size() - 5));
    MambaState t = m.make_state();
    CHECK_THROWS_AS(t.load(r3), error);
    // Reset: a new sequence.
    st.reset();
    MambaState fresh = m.make_state();
    CHECK(same_bits({st.ssm().data, 40 * 16}, {fresh.ssm().data, 40 * 16}));
    CHECK(same_bits({st.conv().data, 3 * 40}, {fresh.conv().data, 3 * 40}));
}

TEST_CASE("MambaMixer: step and step_batch allocate nothing once warmed up", "[mamba]") {
    MambaMixer m(small_config(true));
    randomize(m, 4);
    std::vector<MambaState> states(3, m.make_state());
    std::vector<MambaState*> ptrs{&states[0], &states[1], &states[2]};
    Matrix<float> x = random_input(3, 24, 1), y(3, 24);
    std::vector<float> v(24, 0.1f), o(24);
    m.step_batch(x.view(), ptrs, y.view());  // warm-up
    m.step(v, states[0], o);
    const float* ws = m.workspace_data();
    const std::size_t wsn = m.workspace_size();
    const float* h0 = states[0].ssm().data;
    const float* c0 = states[0].conv().data;
    ThreadPool pool(2);
    for (int i = 0; i < 50; ++i) {
        m.step(v, states[0], o, pool);
        m.step_batch(x.view(), ptrs, y.view(), pool);
        m.step_batch(x.view().rows_slice(0, 2), std::span<MambaState* const>(ptrs.data(), 2), y.view().rows_slice(0, 2));
    }
    CHECK(m.workspace_data() == ws);
    CHECK(m.workspace_size() == wsn);
    CHECK(states[0].ssm().data == h0);
    CHECK(states[0].conv().data == c0);
}

TEST_CASE("MambaMixer: parameters carry HF names and shapes; on_weights_loaded refreshes A for step", "[mamba]") {
    MambaConfig cfg = small_config(true, true);
    MambaMixer m(cfg);
    std::map<std::string, std::vector<std::size_t>> want{
        {"in_proj.weight", {80, 24}}, {"in_proj.bias", {80}},         {"conv1d.weight", {40, 1, 4}},
        {"conv1d.bias", {40}},        {"x_proj.weight", {35, 40}},    {"dt_proj.weight", {40, 3}},
        {"dt_proj.bias", {40}},       {"A_log", {40, 16}},            {"D", {40}},
        {"out_proj.weight", {24, 40}}, {"out_proj.bias", {24}},       {"dt_layernorm.weight", {3}},
        {"b_layernorm.weight", {16}}, {"c_layernorm.weight", {16}}};
    auto params = m.params();
    CHECK(params.size() == want.size());
    for (auto& p : params) {
        INFO(p.name);
        REQUIRE(want.count(p.name));
        CHECK(p.shape == want[p.name]);
        std::size_t n = 1;
        for (auto s : p.shape) n *= s;
        CHECK(p.data.size() == n);
    }
    MambaConfig plain = small_config(false);
    plain.conv_bias = false;
    CHECK(MambaMixer(plain).params().size() == 8);
    // A step right after loading (no prefill) uses the loaded A_log.
    randomize(m, 1);
    MambaMixer m2(cfg);
    auto p1 = m.params(), p2 = m2.params();
    for (std::size_t i = 0; i < p1.size(); ++i) std::copy(p1[i].data.begin(), p1[i].data.end(), p2[i].data.begin());
    m2.on_weights_loaded();
    std::vector<float> v(24, 0.3f), a(24), b(24);
    MambaState s1 = m.make_state(), s2 = m2.make_state();
    m.step(v, s1, a);
    m2.step(v, s2, b);
    CHECK(same_bits(a, b));
    CHECK(m.weight_bytes() > 0);
}

TEST_CASE("MambaMixer: every shape mismatch throws hystack::error naming the call and argument", "[mamba]") {
    MambaConfig cfg = small_config(false);
    MambaMixer m(cfg);
    MambaState st = m.make_state();
    Matrix<float> x(5, 24), y(5, 24), xbad(5, 25), ybad(4, 24);
    CHECK_THROWS_WITH(m.prefill(xbad.view(), st, y.view()), ContainsSubstring("MambaMixer::prefill: x: expected [*, 24], got [5, 25]"));
    CHECK_THROWS_WITH(m.prefill(x.view(), st, ybad.view()), ContainsSubstring("MambaMixer::prefill: y: expected [5, 24], got [4, 24]"));
    MambaConfig other = cfg;
    other.d_conv = 3;
    MambaState wrong = MambaMixer(other).make_state();
    CHECK_THROWS_WITH(m.prefill(x.view(), wrong, y.view()), ContainsSubstring("MambaMixer::prefill: state"));
    MambaState empty;
    CHECK_THROWS_AS(m.prefill(x.view(), empty, y.view()), error);
    std::vector<float> v(24), v1(25);
    CHECK_THROWS_WITH(m.step(v1, st, v), ContainsSubstring("MambaMixer::step: x: expected [24], got [25]"));
    CHECK_THROWS_WITH(m.step(v, st, v1), ContainsSubstring("MambaMixer::step: y"));
    CHECK_THROWS_WITH(m.step(v, wrong, v), ContainsSubstring("state"));
    std::vector<MambaState*> two{&st, &st};
    CHECK_THROWS_WITH(m.step_batch(x.view().rows_slice(0, 3), two, y.view().rows_slice(0, 3)),
                      ContainsSubstring("MambaMixer::step_batch: states: expected 3"));
    std::vector<MambaState*> nul{&st, nullptr};
    CHECK_THROWS_WITH(m.step_batch(x.view().rows_slice(0, 2), nul, y.view().rows_slice(0, 2)), ContainsSubstring("null"));
    CHECK_THROWS_WITH(m.step_batch(xbad.view().rows_slice(0, 2), two, y.view().rows_slice(0, 2)),
                      ContainsSubstring("MambaMixer::step_batch: x"));
    CHECK_THROWS_WITH(m.step_batch(x.view().rows_slice(0, 2), two, y.view().rows_slice(0, 1)),
                      ContainsSubstring("MambaMixer::step_batch: y"));
    MambaConfig bad = cfg;
    bad.dt_rank = 0;
    CHECK_THROWS_AS(MambaMixer(bad), error);
    bad = cfg;
    bad.d_conv = 0;
    CHECK_THROWS_AS(MambaMixer(bad), error);
    bad = cfg;
    bad.d_inner = 0;
    CHECK_THROWS_AS(MambaMixer(bad), error);
    // Empty prefill leaves the state alone.
    Matrix<float> x0(0, 24), y0(0, 24);
    CHECK_NOTHROW(m.prefill(x0.view(), st, y0.view()));
}
