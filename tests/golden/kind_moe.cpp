// kind = moe: a SparseMoE block (HF Jamba routing) against a per-token float64 loop. Loads the
// stacked expert weights into a SparseMoE through its HF parameter names, runs prefill on 1 and 2
// threads and every token through step, and checks the output, the chosen experts (exactly) and
// their weights.
#include <hystack/layers.hpp>

#include <string>
#include <vector>

#include "golden.hpp"

namespace {

void check_moe(const golden::File& f, golden::Report& rep) {
    const std::size_t L = f.meta_int("tokens"), d = f.meta_int("d_model"), H = f.meta_int("hidden"),
                      E = f.meta_int("num_experts"), k = f.meta_int("top_k");
    const bool renorm = f.meta_int("renormalize") != 0;
    hystack::SparseMoE moe({d, H, E, k, renorm});

    // weights by HF name: router.weight, experts.{e}.{gate,up,down}_proj.weight from the stacked tensors
    auto slice = [&](const std::string& name, std::size_t e, std::size_t n) {
        const auto& t = f.at(name);
        hystack::check(t.numel() == E * n, name, ": expected ", E * n, " values, got ", t.numel());
        return std::span<const float>(t.data.data() + e * n, n);
    };
    for (auto& p : moe.params()) {
        std::span<const float> src;
        if (p.name == "router.weight") {
            src = f.at("router").data;
        } else {
            const std::size_t e = std::stoul(p.name.substr(8));  // "experts.{e}."
            const std::string kind = p.name.substr(p.name.find('.', 8) + 1);
            const std::string tensor = kind.substr(0, kind.find(".weight"));  // gate_proj / up_proj / down_proj
            src = slice(tensor, e, p.data.size());
        }
        hystack::check(src.size() == p.data.size(), p.name, ": size ", src.size(), ", expected ", p.data.size());
        std::copy(src.begin(), src.end(), p.data.begin());
    }

    const auto& xt = f.at("x");
    hystack::check(xt.numel() == L * d, "x: expected ", L * d, " values, got ", xt.numel());
    hystack::MatrixView<const float> x(xt.data.data(), L, d);
    std::vector<float> want_index = f.at("topk_index").data, want_weight = f.at("topk_weight").data;

    hystack::ThreadPool pool2(2);
    for (std::size_t threads : {1, 2}) {
        const std::string tag = threads == 1 ? "" : "2 threads ";
        hystack::Matrix<float> y(L, d);
        if (threads == 1)
            moe.prefill(x, y.view());
        else
            moe.prefill(x, y.view(), pool2);
        rep.compare(tag + "out", y.span(), f.at("out").data);
        std::vector<float> got_index, got_weight;
        for (std::size_t t = 0; t < L; ++t)
            for (std::size_t j = 0; j < k; ++j) {
                got_index.push_back(float(moe.last_topk_index()(t, j)));
                got_weight.push_back(moe.last_topk_weight()(t, j));
            }
        rep.compare(tag + "topk_index", got_index, want_index, 0.0, 0.0);
        rep.compare(tag + "topk_weight", got_weight, want_weight);
    }

    // decode: one token at a time
    std::vector<float> steps(L * d);
    for (std::size_t t = 0; t < L; ++t)
        moe.step(std::span<const float>(x.row(t), d), std::span<float>(steps.data() + t * d, d), pool2);
    rep.compare("step out", steps, f.at("out").data);
}

golden::Register reg("moe", check_moe);

}  // namespace
