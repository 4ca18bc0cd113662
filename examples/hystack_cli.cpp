// hystack-cli: generate with, dump logits of, or describe an HF Jamba checkpoint directory.
//   hystack-cli generate MODEL_DIR --prompt "Hello" -n 64 --temperature 0.8 --top-k 40 --seed 1 --threads 2
//   hystack-cli logits MODEL_DIR --ids 1,2,3 --out logits.safetensors
//   hystack-cli info MODEL_DIR
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "cli_args.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

hystack::CausalLM load(const std::string& dir) {
    const auto t0 = clock_type::now();
    hystack::io::JambaLoadOptions opt;
    double last = -1;
    opt.progress = [&](std::size_t done, std::size_t total) {
        const double s = seconds_since(t0);
        if (s - last < 0.2 && done != total) return;
        last = s;
        std::fprintf(stderr, "\rloading %s: %5.1f%% (%.0f MB)", dir.c_str(), total ? 100.0 * double(done) / double(total) : 100.0,
                     double(done) / 1e6);
        std::fflush(stderr);
    };
    auto lm = hystack::io::load_jamba(dir, opt);
    std::fprintf(stderr, "\rloaded %s in %.2f s%30s\n", dir.c_str(), seconds_since(t0), "");
    return lm;
}

// Shows "prefill: 4096/16384 tokens" while a long input runs.
void show_prefill_progress(hystack::CausalLM& lm) {
    auto t0 = std::make_shared<clock_type::time_point>(clock_type::now());
    lm.set_progress([t0](std::size_t done, std::size_t total) {
        if (total < 1024) return;
        std::fprintf(stderr, "\rprefill: %zu/%zu tokens (%.1f s)", done, total, seconds_since(*t0));
        if (done == total) std::fprintf(stderr, "\n");
        std::fflush(stderr);
    });
}

std::vector<hystack::token_id> prompt_ids(const hystack::cli::Args& a, const hystack::CausalLM& lm) {
    if (a.ids) return *a.ids;
    const bool has_tokenizer = std::filesystem::exists(std::filesystem::path(a.model_dir) / "tokenizer.json");
    if (lm.vocab_size() != 256 || has_tokenizer)
        throw hystack::cli::UsageError("generate: --prompt needs a byte-level model (vocab_size 256, no tokenizer.json); "
                                       "this one has vocab_size " + std::to_string(lm.vocab_size()) + ": pass --ids");
    return hystack::cli::bytes_to_ids(*a.prompt);
}

int generate(const hystack::cli::Args& a) {
    auto lm = load(a.model_dir);
    const auto ids = prompt_ids(a, lm);
    const bool bytes = !a.ids;
    hystack::ThreadPool pool(a.threads);
    show_prefill_progress(lm);
    auto st = lm.make_state(a.max_context ? a.max_context : ids.size() + a.n + 1);
    hystack::GenerateOptions opt;
    opt.max_new_tokens = a.n;
    opt.sampling = a.sampling;
    hystack::GenerateStats stats;
    if (bytes) std::fwrite(a.prompt->data(), 1, a.prompt->size(), stdout);
    lm.generate(ids, st, opt, [&](hystack::token_id t) {
        if (bytes) std::fputc(int(t), stdout);
        else std::printf("%d ", t);
        std::fflush(stdout);
    }, pool, &stats);
    std::printf("\n");
    std::fprintf(stderr, "prefill: %zu tokens in %.3f s (%.1f tokens/s); decode: %zu tokens in %.3f s (%.1f tokens/s); %zu threads\n",
                 stats.prompt_tokens, stats.prefill_seconds, stats.prefill_tokens_per_second(), stats.decode_steps,
                 stats.decode_seconds, stats.decode_tokens_per_second(), a.threads);
    return 0;
}

int logits(const hystack::cli::Args& a) {
    auto lm = load(a.model_dir);
    hystack::ThreadPool pool(a.threads);
    show_prefill_progress(lm);
    auto st = lm.make_state(a.ids->size() + 1);
    const auto t0 = clock_type::now();
    auto all = lm.prefill_all(*a.ids, st, pool);
    const double s = seconds_since(t0);
    std::vector<float> idf(a.ids->begin(), a.ids->end());
    hystack::io::write_safetensors(a.out,
                                   std::vector<hystack::io::TensorData>{
                                       {"input_ids", {idf.size()}, idf},
                                       {"logits", {all.rows(), all.cols()}, all.span()},
                                       {"last_hidden", {lm.d_model()}, lm.last_hidden(st)}},
                                   {{"producer", "hystack-cli logits"}});
    std::fprintf(stderr, "wrote %s: logits [%zu, %zu]; prefill %.1f tokens/s\n", a.out.c_str(), all.rows(), all.cols(),
                 double(a.ids->size()) / s);
    return 0;
}

int info(const hystack::cli::Args& a) {
    auto lm = load(a.model_dir);
    std::printf("schedule: %s\n", lm.schedule().describe().c_str());
    std::printf("parameters: %zu (%.2f GB as f32)\n", lm.num_params(), double(lm.num_params()) * 4 / 1e9);
    std::printf("vocab %zu, d_model %zu, tied head: %s\n", lm.vocab_size(), lm.d_model(),
                lm.config().tie_word_embeddings ? "yes" : "no");
    for (auto c : a.contexts) std::printf("memory: %s\n", lm.memory_report(c).to_string().c_str());
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    hystack::cli::Args a;
    try {
        a = hystack::cli::parse(argc, argv);
    } catch (const hystack::cli::UsageError& e) {
        std::fprintf(stderr, "hystack-cli: %s\n%s", e.what(), hystack::cli::usage);
        return 2;
    }
    if (a.help) {
        std::printf("%s", hystack::cli::usage);
        return 0;
    }
    try {
        if (a.command == "generate") return generate(a);
        if (a.command == "logits") return logits(a);
        return info(a);
    } catch (const hystack::cli::UsageError& e) {
        std::fprintf(stderr, "hystack-cli: %s\n%s", e.what(), hystack::cli::usage);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\nhystack-cli: error: %s\n", e.what());
        return 1;
    }
}
