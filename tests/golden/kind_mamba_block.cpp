// kind = mamba_block: state-spaces/mamba's Mamba module (slow path). Loads the weights by HF name into a
// MambaMixer, then checks prefill output and states, decode steps (one sequence at a time and batched), and one
// prefill over the whole sequence. The golden conv_state [d_inner, d_conv] holds the last d_conv inputs; hystack
// keeps the last d_conv-1 (all the recurrence needs), so column 0 is checked against in_proj of that token.
#include <hystack/layers.hpp>

#include <set>

#include "golden.hpp"

namespace {

using hystack::Matrix;
using hystack::MatrixView;
using hystack::MambaMixer;
using hystack::MambaState;

MatrixView<const float> slice(const golden::Tensor& t, std::size_t b) {  // [batch, L, d] -> [L, d]
    return {t.data.data() + b * t.dim(1) * t.dim(2), t.dim(1), t.dim(2)};
}

std::span<const float> flat(MatrixView<const float> v) { return {v.data, v.rows * v.cols}; }  // contiguous views

// Compares a state with the golden conv_state [d_inner, d_conv] and ssm_state [d_inner, d_state] of batch b.
// seq: every input token so far [T, d_model], for the oldest conv column.
void compare_state(golden::Report& rep, const std::string& what, MambaMixer& m, const MambaState& st,
                   const golden::Tensor& conv, const golden::Tensor& ssm, std::size_t b,
                   const std::vector<float>& seq) {
    const auto& cfg = m.config();
    const std::size_t di = cfg.d_inner, K = cfg.d_conv, dm = cfg.d_model, T = seq.size() / dm;
    std::vector<float> got(di * K), want(conv.data.begin() + std::ptrdiff_t(b * di * K),
                                         conv.data.begin() + std::ptrdiff_t((b + 1) * di * K));
    for (std::size_t c = 0; c < di; ++c)
        for (std::size_t k = 1; k < K; ++k) got[c * K + k] = st.conv()(k - 1, c);
    // Column 0: the x half of in_proj(token T - K), zero when the sequence is shorter than K.
    if (T >= K) {
        const float* W = nullptr;
        for (auto& p : m.params())
            if (p.name == "in_proj.weight") W = p.data.data();
        std::vector<float> xz(di);
        hystack::kernels::linear(MatrixView<const float>(seq.data() + (T - K) * dm, 1, dm), MatrixView<const float>(W, di, dm),
                                 {}, MatrixView<float>(xz.data(), 1, di));
        for (std::size_t c = 0; c < di; ++c) got[c * K] = xz[c];
    }
    rep.compare(what + "conv_state", got, want);
    rep.compare(what + "ssm_state", flat(st.ssm()),
                std::span<const float>(ssm.data.data() + b * di * cfg.d_state, di * cfg.d_state));
}

void check(const golden::File& f, golden::Report& rep) {
    hystack::MambaConfig cfg;
    cfg.d_model = f.meta_int("d_model");
    cfg.d_inner = f.meta_int("expand") * cfg.d_model;
    cfg.d_state = f.meta_int("d_state");
    cfg.d_conv = f.meta_int("d_conv");
    cfg.dt_rank = f.meta_int("dt_rank");
    cfg.conv_bias = f.has("weights.conv1d.bias");
    cfg.proj_bias = f.has("weights.in_proj.bias");
    MambaMixer m(cfg);
    std::set<std::string> used;
    for (auto& p : m.params()) {
        const std::string name = "weights." + p.name;
        if (!f.has(name)) {
            rep.fail("missing tensor " + name);
            continue;
        }
        const auto& t = f.at(name);
        if (t.shape != p.shape) {
            rep.fail(name + ": shape differs from the mixer's");
            continue;
        }
        std::copy(t.data.begin(), t.data.end(), p.data.begin());
        used.insert(name);
    }
    for (auto& [name, t] : f.tensors)
        if (name.rfind("weights.", 0) == 0 && !used.count(name)) rep.fail("tensor " + name + " not used by the mixer");
    if (!rep.failures.empty()) return;
    m.on_weights_loaded();

    const auto& input = f.at("input");
    const auto& step_input = f.at("step_input");
    const std::size_t batch = input.dim(0), L = input.dim(1), S = step_input.dim(1), dm = cfg.d_model;
    hystack::ThreadPool pool(2);
    std::vector<MambaState> states;
    std::vector<std::vector<float>> seqs;
    for (std::size_t b = 0; b < batch; ++b) {
        const std::string tag = golden::batch_tag(batch, b, " ");
        MambaState st = m.make_state();
        Matrix<float> out(L, dm);
        m.prefill(slice(input, b), st, out.view());
        rep.compare(tag + "output", out.span(), flat(slice(f.at("output"), b)));
        std::vector<float> seq(input.data.begin() + std::ptrdiff_t(b * L * dm), input.data.begin() + std::ptrdiff_t((b + 1) * L * dm));
        compare_state(rep, tag, m, st, f.at("conv_state"), f.at("ssm_state"), b, seq);
        states.push_back(st);
        seqs.push_back(seq);
        // Steps, one sequence alone.
        Matrix<float> sout(S, dm);
        for (std::size_t s = 0; s < S; ++s) {
            m.step(slice(step_input, b).row_span(s), st, sout.view().row_span(s));
            auto r = slice(step_input, b).row_span(s);
            seq.insert(seq.end(), r.begin(), r.end());
        }
        rep.compare(tag + "step_output", sout.span(), flat(slice(f.at("step_output"), b)));
        compare_state(rep, tag + "step ", m, st, f.at("step_conv_state"), f.at("step_ssm_state"), b, seq);
        // One prefill over input ++ step_input, on two threads.
        Matrix<float> all(L + S, dm), full(L + S, dm);
        std::copy(seq.begin(), seq.end(), all.data());
        MambaState fresh = m.make_state();
        m.prefill(all.view(), fresh, full.view(), pool);
        rep.compare(tag + "full_output", full.span(), flat(slice(f.at("full_output"), b)));
    }
    // The decode steps again, all sequences in one batched step.
    std::vector<MambaState*> ptrs;
    for (auto& st : states) ptrs.push_back(&st);
    Matrix<float> x(batch, dm), y(batch, dm);
    std::vector<float> got(batch * S * dm);
    for (std::size_t s = 0; s < S; ++s) {
        for (std::size_t b = 0; b < batch; ++b)
            for (std::size_t c = 0; c < dm; ++c) x(b, c) = slice(step_input, b)(s, c);
        m.step_batch(x.view(), ptrs, y.view(), pool);
        for (std::size_t b = 0; b < batch; ++b)
            for (std::size_t c = 0; c < dm; ++c) got[(b * S + s) * dm + c] = y(b, c);
    }
    rep.compare("batched step_output", got, f.at("step_output").data);
    for (std::size_t b = 0; b < batch; ++b) {
        auto seq = seqs[b];
        for (std::size_t s = 0; s < S; ++s) {
            auto r = slice(step_input, b).row_span(s);
            seq.insert(seq.end(), r.begin(), r.end());
        }
        compare_state(rep, "batched[" + std::to_string(b) + "] step ", m, states[b], f.at("step_conv_state"),
                      f.at("step_ssm_state"), b, seq);
    }
}

golden::Register reg("mamba_block", check);

}  // namespace
