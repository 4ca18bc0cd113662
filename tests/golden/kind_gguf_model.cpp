// kind = gguf_model: a llama.cpp `jamba` GGUF file (model.gguf, F32 / BF16 / Q8_0 weights made by
// llama.cpp's own tools) beside golden.safetensors, holding llama.cpp's logits and a float64 truth.
// hystack loads the file as it is (load_jamba_gguf, weights as stored) and passes when its logits are
// no further from the truth than the file's `tolerance` (1.5 x llama.cpp's own max error, floor 1e-4)
// for a prefill of the whole prompt, and for a prefill of `prefill_len` tokens followed by single
// steps; on 1 and 2 threads. The notes give hystack's error beside llama.cpp's and the argmax agreement.
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "golden.hpp"

namespace {

// max |a - b| and the fraction of rows (of `cols`) whose argmax agree.
std::pair<double, double> error_and_agreement(std::span<const float> a, std::span<const float> b, std::size_t cols) {
    double err = 0;
    std::size_t agree = 0, rows = a.size() / cols;
    for (std::size_t i = 0; i < a.size(); ++i) err = std::max(err, std::isnan(a[i]) ? INFINITY : double(std::fabs(a[i] - b[i])));
    for (std::size_t r = 0; r < rows; ++r) {
        const auto ra = a.subspan(r * cols, cols), rb = b.subspan(r * cols, cols);
        agree += std::max_element(ra.begin(), ra.end()) - ra.begin() == std::max_element(rb.begin(), rb.end()) - rb.begin();
    }
    return {err, rows ? double(agree) / double(rows) : 1.0};
}

template <class Exec>
void check_run(const golden::File& f, golden::Report& rep, const hystack::CausalLM& lm, Exec& exec, const std::string& tag) {
    std::vector<hystack::token_id> ids;
    for (float v : f.at("input_ids").data) ids.push_back(hystack::token_id(v));
    const auto& truth = f.at("truth_logits");
    const std::size_t L = ids.size(), V = lm.vocab_size(), P = std::min(f.meta_int("prefill_len"), L);
    if (truth.numel() != L * V) {
        rep.fail(tag + "truth_logits: expected [" + std::to_string(L) + ", " + std::to_string(V) + "]");
        return;
    }
    const double tol = f.meta_double("tolerance");
    auto report = [&](const std::string& what, std::span<const float> got) {
        const auto [err, agree] = error_and_agreement(got, truth.data, V);
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s%s %.3g (llama.cpp %s, tolerance %.3g, argmax %.1f%%)", tag.c_str(),
                      what.c_str(), err, f.meta.at("llamacpp_max_abs_err").c_str(), tol, 100.0 * agree);
        rep.notes.push_back(buf);
        if (!(err <= tol)) rep.fail(std::string(buf) + ": over the tolerance");
    };
    // the whole prompt in one call
    auto st = lm.make_state(L + 1);
    report("prefill", lm.prefill_all(ids, st, exec).span());
    // prefill_len tokens, then one token per call
    auto sd = lm.make_state(L + 1);
    auto head = lm.prefill_all(std::span<const hystack::token_id>(ids).first(P), sd, exec);
    std::vector<float> got(head.span().begin(), head.span().end());
    for (std::size_t i = P; i < L; ++i) {
        auto l = lm.step(ids[i], sd, exec);
        got.insert(got.end(), l.begin(), l.end());
    }
    report("prefill+decode", got);
}

void check(const golden::File& f, golden::Report& rep) {
    const auto path = (f.path.parent_path() / "model.gguf").string();
    const auto lm = hystack::io::load_jamba_gguf(path);
    if (f.meta.count("weight_type")) {
        // the file's matrices are loaded as stored: the embedding is of the weight type the case names
        const std::string want = f.meta.at("weight_type"), got = hystack::to_string(lm.lm_head().type);
        if (want != got) rep.fail("weights loaded as " + got + ", the case is " + want);
    }
    hystack::SerialExecutor serial;
    check_run(f, rep, lm, serial, "");
    hystack::ThreadPool pool(2);
    check_run(f, rep, lm, pool, "t2.");
}

golden::Register reg("gguf_model", check);

}  // namespace
