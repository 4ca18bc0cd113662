// kind = jamba_model: a whole HF JambaForCausalLM directory (config.json, model.safetensors) beside
// golden.safetensors. Loads the directory with hystack::io::load_jamba, then checks prefill logits
// at every position, decode steps, last hidden states, one uncached prefill over input + steps,
// and a prefill split in two chunks (conv/ssm/KV state carried), on 1 and 2 threads.
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <string>
#include <vector>

#include "golden.hpp"

namespace {

std::vector<hystack::token_id> ids_of(const golden::Tensor& t) {
    std::vector<hystack::token_id> ids;
    for (float v : t.data) ids.push_back(hystack::token_id(v));
    return ids;
}

std::span<const float> row_of(const golden::Tensor& t, std::size_t r) {
    const std::size_t cols = t.shape.back();
    return {t.data.data() + r * cols, cols};
}

template <class Exec>
void check_model(const golden::File& f, golden::Report& rep, hystack::CausalLM& lm, Exec& exec, const std::string& tag) {
    const auto input = ids_of(f.at("input_ids"));
    const std::size_t L = input.size(), V = lm.vocab_size();
    std::vector<hystack::token_id> steps;
    if (f.has("step_ids")) steps = ids_of(f.at("step_ids"));
    const std::size_t ctx = L + steps.size() + 1;

    // Prefill: logits at every position.
    auto st = lm.make_state(ctx);
    auto logits = lm.prefill_all(input, st, exec);
    rep.compare(tag + "logits", logits.span(), f.at("logits").data);
    if (f.has("last_hidden")) rep.compare(tag + "last_hidden", lm.last_hidden(st), f.at("last_hidden").data);

    // Decode steps with the caches.
    if (!steps.empty()) {
        std::vector<float> got;
        for (auto id : steps) {
            auto l = lm.step(id, st, exec);
            got.insert(got.end(), l.begin(), l.end());
        }
        rep.compare(tag + "step_logits", got, f.at("step_logits").data);
        if (f.has("step_last_hidden"))
            rep.compare(tag + "step_last_hidden", lm.last_hidden(st), f.at("step_last_hidden").data);
    }

    // One uncached prefill over input + steps.
    if (f.has("full_logits")) {
        std::vector<hystack::token_id> all = input;
        all.insert(all.end(), steps.begin(), steps.end());
        auto fresh = lm.make_state(ctx);
        auto full = lm.prefill_all(all, fresh, exec);
        rep.compare(tag + "full_logits", full.span(), f.at("full_logits").data);
    }

    // Prefill in two chunks (state carried), and the last-position API.
    if (L >= 2) {
        const std::size_t cut = L / 2 + 1;
        auto st2 = lm.make_state(ctx);
        auto a = lm.prefill_all(std::span<const hystack::token_id>(input).first(cut), st2, exec);
        auto b = lm.prefill_all(std::span<const hystack::token_id>(input).subspan(cut), st2, exec);
        std::vector<float> got(a.span().begin(), a.span().end());
        got.insert(got.end(), b.span().begin(), b.span().end());
        rep.compare(tag + "chunked_logits", got, f.at("logits").data);
        auto st3 = lm.make_state(ctx);
        auto last = lm.prefill(input, st3, exec);
        rep.compare(tag + "prefill_last", last, row_of(f.at("logits"), L - 1));
        (void)V;
    }
}

void check(const golden::File& f, golden::Report& rep) {
    auto lm = hystack::io::load_jamba(f.path.parent_path().string());
    // The schedule must be what the metadata says (when it says it).
    if (f.meta.count("layers_block_type")) {
        const std::string& bt = f.meta.at("layers_block_type");
        std::size_t attn = 0;
        for (std::size_t pos = 0; (pos = bt.find("attention", pos)) != std::string::npos; ++pos) ++attn;
        if (attn != lm.schedule().count(hystack::MixerKind::attention))
            rep.fail("schedule: metadata layers_block_type " + bt + ", model " + lm.schedule().compact());
    }
    if (f.meta.count("layers_num_experts")) {
        const std::string& ne = f.meta.at("layers_num_experts");
        std::string ours;
        for (std::size_t i = 0; i < lm.schedule().size(); ++i) {
            if (i) ours += ',';  // appended: GCC 12 misreads "," + std::to_string(...) (-Wrestrict)
            ours += std::to_string(lm.schedule()[i].ff == hystack::kinds::moe ? lm.config().stack.num_experts : 1);
        }
        if (ours != ne) rep.fail("schedule: metadata layers_num_experts " + ne + ", model " + ours);
    }
    hystack::SerialExecutor serial;
    check_model(f, rep, lm, serial, "");
    hystack::ThreadPool pool(2);
    lm.set_prefill_chunk(3);  // small chunks on the threaded run: state carried across many chunks
    check_model(f, rep, lm, pool, "t2.");
}

golden::Register reg("jamba_model", check);

}  // namespace
