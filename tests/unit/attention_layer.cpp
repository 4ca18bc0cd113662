// AttentionLayer: against projections + the double reference, prefill/step consistency, ring cache at
// L = 5W + 3, batched steps, threads, state save/load, no allocation in step, errors.
#include <hystack/layers.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "catch.hpp"

using namespace hystack;

namespace {

void fill(std::span<float> v, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(-scale, scale);
    for (auto& x : v) x = dist(rng);
}

AttentionLayer make_layer(const AttentionConfig& cfg, unsigned seed) {
    AttentionLayer layer(cfg);
    unsigned s = seed;
    for (auto& p : layer.params()) fill(p.data, s++, 0.3f);
    return layer;
}

// y = o_proj(attention_reference(q, k, v)) over all N tokens (positions 0..N-1), RoPE applied as the layer does.
Matrix<float> reference(AttentionLayer& layer, const Matrix<float>& x) {
    const auto& c = layer.config();
    const std::size_t N = x.rows(), qd = c.n_heads * c.head_dim, kd = c.n_kv_heads * c.head_dim;
    auto params = layer.params();
    auto find = [&](const std::string& name) -> std::span<const float> {
        for (auto& p : params)
            if (p.name == name) return p.data;
        return {};
    };
    Matrix<float> q(N, qd), k(N, kd), v(N, kd), att(N, qd), y(N, c.d_model);
    kernels::linear(x.view(), MatrixView<const float>(find("q_proj.weight").data(), qd, c.d_model), find("q_proj.bias"), q.view());
    kernels::linear(x.view(), MatrixView<const float>(find("k_proj.weight").data(), kd, c.d_model), find("k_proj.bias"), k.view());
    kernels::linear(x.view(), MatrixView<const float>(find("v_proj.weight").data(), kd, c.d_model), find("v_proj.bias"), v.view());
    if (c.rope) {
        kernels::rope(q.view(), c.n_heads, c.head_dim, 0, c.rope_theta);
        kernels::rope(k.view(), c.n_kv_heads, c.head_dim, 0, c.rope_theta);
    }
    kernels::attention_reference(q.view(), 0, k.view(), v.view(), 0, att.view(), layer.dims());
    kernels::linear(att.view(), MatrixView<const float>(find("o_proj.weight").data(), c.d_model, qd), find("o_proj.bias"), y.view());
    return y;
}

double max_excess(std::span<const float> got, std::span<const float> want, double tol = 2e-5) {
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double e = std::fabs(double(got[i]) - want[i]) / (tol + tol * std::fabs(double(want[i])));
        worst = std::isnan(e) ? 1e30 : std::max(worst, e);
    }
    return worst;
}

// Runs the sequence x through the layer in pieces: sizes in `chunks` (prefill; 1 = a step), the rest as steps.
Matrix<float> run_pieces(AttentionLayer& layer, AttentionCache& st, const Matrix<float>& x, std::vector<std::size_t> chunks) {
    Matrix<float> y(x.rows(), x.cols());
    std::size_t t = 0;
    for (std::size_t n : chunks) {
        n = std::min(n, x.rows() - t);
        if (n == 1)
            layer.step(std::span<const float>(x.row(t), x.cols()), st, std::span<float>(y.row(t), y.cols()));
        else
            layer.prefill(x.view().rows_slice(t, n), st, y.view().rows_slice(t, n));
        t += n;
    }
    for (; t < x.rows(); ++t) layer.step(std::span<const float>(x.row(t), x.cols()), st, std::span<float>(y.row(t), y.cols()));
    return y;
}

}  // namespace

TEST_CASE("AttentionLayer params have HF names and shapes", "[attention_layer]") {
    AttentionConfig cfg{.d_model = 64, .n_heads = 8, .n_kv_heads = 2, .head_dim = 16, .qkv_bias = true, .o_bias = true};
    AttentionLayer layer(cfg);
    auto p = layer.params();
    REQUIRE(p.size() == 8);
    CHECK(p[0].name == "q_proj.weight");
    CHECK(p[0].shape == std::vector<std::size_t>{128, 64});
    CHECK(p[1].name == "q_proj.bias");
    CHECK(p[2].name == "k_proj.weight");
    CHECK(p[2].shape == std::vector<std::size_t>{32, 64});
    CHECK(p[4].name == "v_proj.weight");
    CHECK(p[6].name == "o_proj.weight");
    CHECK(p[6].shape == std::vector<std::size_t>{64, 128});
    CHECK(p[7].name == "o_proj.bias");
    for (auto& q : p) CHECK(q.data.size() == (q.shape.size() == 2 ? q.shape[0] * q.shape[1] : q.shape[0]));
    AttentionLayer plain(AttentionConfig{.d_model = 64, .n_heads = 4});
    auto pp = plain.params();
    REQUIRE(pp.size() == 4);
    CHECK(pp[3].name == "o_proj.weight");
    CHECK(plain.config().head_dim == 16);
    CHECK(plain.config().n_kv_heads == 4);
}

TEST_CASE("AttentionLayer prefill and steps match the reference", "[attention_layer]") {
    struct C {
        AttentionConfig cfg;
        std::size_t N;
    };
    std::vector<C> cases = {
        {{.d_model = 48, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64}, 40},
        {{.d_model = 32, .n_heads = 8, .n_kv_heads = 1, .head_dim = 40, .qkv_bias = true, .o_bias = true}, 23},
        {{.d_model = 32, .n_heads = 2, .n_kv_heads = 2, .head_dim = 128, .window = 6, .rope = true}, 33},
        {{.d_model = 40, .n_heads = 4, .n_kv_heads = 4, .head_dim = 16, .window = 9, .rope = true, .rope_theta = 1e6}, 30},
    };
    unsigned seed = 10;
    for (auto& c : cases) {
        auto layer = make_layer(c.cfg, seed);
        Matrix<float> x(c.N, c.cfg.d_model);
        fill(x.span(), seed + 100);
        seed += 7;
        const auto want = reference(layer, x);
        INFO("d_model " << c.cfg.d_model << " heads " << c.cfg.n_heads << "/" << c.cfg.n_kv_heads << " window " << c.cfg.window);
        for (auto chunks : std::vector<std::vector<std::size_t>>{{c.N}, {7, 1, 1, 5}, {1, 3, 13}, {}}) {
            auto st = layer.make_state(c.N);
            const auto got = run_pieces(layer, st, x, chunks);
            CHECK(st.length() == c.N);
            CHECK(max_excess(got.span(), want.span()) <= 1.0);
        }
    }
}

TEST_CASE("AttentionLayer ring cache equals the full window mask at L = 5W + 3", "[attention_layer]") {
    for (std::size_t W : {4, 16, 33}) {
        AttentionConfig cfg{.d_model = 32, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64, .window = W};
        auto layer = make_layer(cfg, unsigned(W));
        const std::size_t N = 5 * W + 3;
        Matrix<float> x(N, cfg.d_model);
        fill(x.span(), 77);
        const auto want = reference(layer, x);
        for (auto chunks : std::vector<std::vector<std::size_t>>{{N}, {W + 1, 2 * W, 3}, {2, W - 1, 1, 1, W + 5}, {}}) {
            auto st = layer.make_state(1);  // window caches ignore max_context
            CHECK(st.is_window());
            const auto got = run_pieces(layer, st, x, chunks);
            INFO("W " << W << " first chunk " << (chunks.empty() ? 0 : chunks[0]));
            CHECK(max_excess(got.span(), want.span()) <= 1.0);
            CHECK(st.bytes() == 2 * ((W + 15) / 16 * 16) * 2 * 64 * sizeof(float));  // whole K tiles of 16 keys
        }
        // A window of at least the length equals global attention.
        AttentionConfig gcfg = cfg;
        gcfg.window = 0;
        auto global = make_layer(gcfg, unsigned(W));
        AttentionConfig wide = cfg;
        wide.window = N;
        auto widel = make_layer(wide, unsigned(W));
        auto s1 = global.make_state(N);
        auto s2 = widel.make_state(N);
        Matrix<float> y1(N, cfg.d_model), y2(N, cfg.d_model);
        global.prefill(x.view(), s1, y1.view());
        widel.prefill(x.view(), s2, y2.view());
        for (std::size_t i = 0; i < y1.size(); ++i) REQUIRE(y1.data()[i] == y2.data()[i]);
    }
}

TEST_CASE("AttentionLayer step_batch equals separate steps; threads give identical bits", "[attention_layer]") {
    for (std::size_t window : {0, 5}) {
        AttentionConfig cfg{.d_model = 64, .n_heads = 8, .n_kv_heads = 2, .head_dim = 64, .window = window};
        auto layer = make_layer(cfg, 3);
        ThreadPool pool(2);
        SerialExecutor serial;
        const std::size_t B = 3;
        std::vector<AttentionCache> a, b;
        for (std::size_t i = 0; i < B; ++i) {
            a.push_back(layer.make_state(64));
            Matrix<float> x(5 + 7 * i, cfg.d_model), y(5 + 7 * i, cfg.d_model);
            fill(x.span(), unsigned(20 + i));
            layer.prefill(x.view(), a.back(), y.view(), serial);
        }
        b = a;
        for (int it = 0; it < 4; ++it) {
            Matrix<float> x(B, cfg.d_model), y1(B, cfg.d_model), y2(B, cfg.d_model);
            fill(x.span(), unsigned(100 + it));
            for (std::size_t i = 0; i < B; ++i)
                layer.step(std::span<const float>(x.row(i), cfg.d_model), a[i], std::span<float>(y1.row(i), cfg.d_model), serial);
            std::vector<AttentionCache*> ptrs;
            for (auto& s : b) ptrs.push_back(&s);
            layer.step_batch(x.view(), ptrs, y2.view(), pool);
            for (std::size_t i = 0; i < y1.size(); ++i) REQUIRE(y1.data()[i] == y2.data()[i]);
        }
        // Prefill on 1 and 2 threads.
        Matrix<float> x(150, cfg.d_model), y1(150, cfg.d_model), y2(150, cfg.d_model);
        fill(x.span(), 9);
        auto s1 = layer.make_state(200), s2 = layer.make_state(200);
        layer.prefill(x.view(), s1, y1.view(), serial);
        layer.prefill(x.view(), s2, y2.view(), pool);
        for (std::size_t i = 0; i < y1.size(); ++i) REQUIRE(y1.data()[i] == y2.data()[i]);
    }
}

TEST_CASE("AttentionLayer state save/load continues the sequence; step does not allocate", "[attention_layer]") {
    AttentionConfig cfg{.d_model = 32, .n_heads = 4, .n_kv_heads = 1, .head_dim = 64};
    auto layer = make_layer(cfg, 5);
    Matrix<float> x(20, cfg.d_model), y(20, cfg.d_model);
    fill(x.span(), 6);
    auto st = layer.make_state(3000);
    layer.prefill(x.view().rows_slice(0, 10), st, y.view().rows_slice(0, 10));
    std::vector<std::byte> bytes;
    ByteWriter w(bytes);
    st.save(w);
    auto st2 = layer.make_state(3000);
    ByteReader r(bytes);
    st2.load(r);
    std::vector<float> y1(cfg.d_model), y2(cfg.d_model);
    layer.step(std::span<const float>(x.row(10), cfg.d_model), st, y1);
    layer.step(std::span<const float>(x.row(10), cfg.d_model), st2, y2);
    CHECK(y1 == y2);
    // Warm up, then many steps (crossing decode chunk boundaries): scratch never moves or grows.
    const float* ws = layer.workspace_data();
    const std::size_t wsize = layer.workspace_size();
    const float* kws = layer.kernel_workspace_data();
    for (std::size_t t = 0; t < 2500; ++t) {
        layer.step(std::span<const float>(x.row(t % 20), cfg.d_model), st, y1);
        REQUIRE(layer.workspace_data() == ws);
        REQUIRE(layer.workspace_size() == wsize);
        REQUIRE(layer.kernel_workspace_data() == kws);
    }
    CHECK(st.length() == 2511);
}

TEST_CASE("AttentionLayer errors: shapes, wrong cache, overflow", "[attention_layer]") {
    CHECK_THROWS_AS(AttentionLayer(AttentionConfig{.d_model = 30, .n_heads = 4}), hystack::error);
    CHECK_THROWS_AS(AttentionLayer(AttentionConfig{.d_model = 32, .n_heads = 4, .n_kv_heads = 3}), hystack::error);
    CHECK_THROWS_AS(AttentionLayer(AttentionConfig{.d_model = 32, .n_heads = 4, .head_dim = 5, .rope = true}), hystack::error);
    AttentionConfig cfg{.d_model = 32, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8};
    auto layer = make_layer(cfg, 1);
    auto st = layer.make_state(4);
    Matrix<float> x(3, 32), y(3, 32), bad(3, 31);
    fill(x.span(), 2);
    CHECK_THROWS_AS(layer.prefill(bad.view(), st, y.view()), hystack::error);
    CHECK_THROWS_AS(layer.prefill(x.view(), st, bad.view()), hystack::error);
    try {
        layer.prefill(bad.view(), st, y.view());
    } catch (const hystack::error& e) {
        CHECK(std::string(e.what()) == "AttentionLayer::prefill: x: expected [*, 32], got [3, 31]");
    }
    layer.prefill(x.view(), st, y.view());
    std::vector<float> xs(32), ys(32);
    layer.step(xs, st, ys);  // 4 of 4
    try {
        layer.step(xs, st, ys);
        FAIL("no throw");
    } catch (const hystack::error& e) {
        CHECK(std::string(e.what()) == "KVCache: sequence of 5 tokens exceeds capacity 4");
    }
    CHECK(st.length() == 4);
    auto st2 = layer.make_state(4);
    layer.prefill(x.view(), st2, y.view());
    CHECK_THROWS_AS(layer.prefill(x.view(), st2, y.view()), hystack::error);  // 6 > 4: nothing appended
    CHECK(st2.length() == 3);
    // Caches of another layer shape or kind.
    AttentionLayer win(AttentionConfig{.d_model = 32, .n_heads = 4, .n_kv_heads = 2, .head_dim = 8, .window = 3});
    auto wst = win.make_state(10);
    CHECK_THROWS_AS(layer.prefill(x.view(), wst, y.view()), hystack::error);
    auto gst = layer.make_state(10);
    CHECK_THROWS_AS(win.prefill(x.view(), gst, y.view()), hystack::error);
    AttentionLayer other(AttentionConfig{.d_model = 32, .n_heads = 4, .n_kv_heads = 4, .head_dim = 8});
    auto ost = other.make_state(10);
    CHECK_THROWS_AS(layer.prefill(x.view(), ost, y.view()), hystack::error);
    std::vector<float> short_x(31);
    CHECK_THROWS_AS(layer.step(short_x, gst, ys), hystack::error);
}
