// hystack-cli: generate with, dump logits of, describe or convert a Jamba model: an HF checkpoint
// directory or a llama.cpp jamba GGUF file (MODEL ending in .gguf).
//   hystack-cli generate MODEL --prompt "Hello" -n 64 --temperature 0.8 --top-k 40 --seed 1 --threads 2
//   hystack-cli logits MODEL --ids 1,2,3 --out logits.safetensors
//   hystack-cli info MODEL --weights q8_0 --context 32768
//   hystack-cli convert MODEL_DIR model-q8_0.gguf --weights q8_0
#include <hystack/hystack.hpp>
#include <hystack/io.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "cli_args.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

// Loads an HF directory or (a path ending in .gguf) a jamba GGUF file, the weight matrices in `weights`
// (nullopt: as stored), showing progress.
hystack::CausalLM load(const std::string& path, std::optional<hystack::DType> weights) {
    const auto t0 = clock_type::now();
    double last = -1;
    auto progress = [&](std::size_t done, std::size_t total) {
        const double s = seconds_since(t0);
        if (s - last < 0.2 && done != total) return;
        last = s;
        std::fprintf(stderr, "\rloading %s: %5.1f%% (%.0f MB)", path.c_str(), total ? 100.0 * double(done) / double(total) : 100.0,
                     double(done) / 1e6);
        std::fflush(stderr);
    };
    hystack::CausalLM lm = [&] {
        if (hystack::cli::is_gguf_path(path)) {
            hystack::io::JambaGgufOptions opt;
            opt.weights = weights;
            opt.progress = progress;
            return hystack::io::load_jamba_gguf(path, opt);
        }
        hystack::io::JambaLoadOptions opt;
        opt.weights = weights;
        opt.progress = progress;
        return hystack::io::load_jamba(path, opt);
    }();
    std::fprintf(stderr, "\rloaded %s in %.2f s%30s\n", path.c_str(), seconds_since(t0), "");
    return lm;
}

// The weight types of a model and their bytes: "q8_0 (2.05 MiB, 120 parameters) + f32 (150.5 KiB, 81 parameters)",
// the most bytes first; and the total.
struct WeightSummary {
    std::string types;
    std::size_t bytes = 0;
};
WeightSummary weight_summary(hystack::CausalLM& lm) {
    std::map<hystack::DType, std::pair<std::size_t, std::size_t>> by;  // bytes, parameters
    WeightSummary w;
    for (const auto& p : lm.params()) {
        auto& [bytes, n] = by[hystack::param_dtype(p)];
        bytes += hystack::param_bytes(p);
        ++n;
        w.bytes += hystack::param_bytes(p);
    }
    std::vector<std::pair<std::size_t, hystack::DType>> order;
    for (const auto& [t, bn] : by) order.push_back({bn.first, t});
    std::sort(order.rbegin(), order.rend());
    for (const auto& [bytes, t] : order) {
        if (!w.types.empty()) w.types += " + ";
        w.types += std::string(hystack::to_string(t)) + " (" + hystack::MemoryReport::human(bytes) + ", " +
                   std::to_string(by[t].second) + " parameters)";
    }
    return w;
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
    const bool has_tokenizer = !hystack::cli::is_gguf_path(a.model_dir) &&
                               std::filesystem::exists(std::filesystem::path(a.model_dir) / "tokenizer.json");
    if (lm.vocab_size() != 256 || has_tokenizer)
        throw hystack::cli::UsageError("generate: --prompt needs a byte-level model (vocab_size 256, no tokenizer.json); "
                                       "this one has vocab_size " + std::to_string(lm.vocab_size()) + ": pass --ids");
    return hystack::cli::bytes_to_ids(*a.prompt);
}

int generate(const hystack::cli::Args& a) {
    auto lm = load(a.model_dir, a.weights);
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
    auto lm = load(a.model_dir, a.weights);
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
    auto lm = load(a.model_dir, a.weights);
    using hystack::MemoryReport;
    const WeightSummary w = weight_summary(lm);
    std::printf("schedule: %s\n", lm.schedule().describe().c_str());
    std::printf("parameters: %zu (%.2f GB as f32)\n", lm.num_params(), double(lm.num_params()) * 4 / 1e9);
    std::printf("weights: %s = %s; a decode step reads %s\n", w.types.c_str(), MemoryReport::human(w.bytes).c_str(),
                MemoryReport::human(lm.weight_bytes_per_token()).c_str());
    std::printf("vocab %zu, d_model %zu, tied head: %s\n", lm.vocab_size(), lm.d_model(),
                lm.config().tie_word_embeddings ? "yes" : "no");
    for (auto c : a.contexts) {
        const MemoryReport r = lm.memory_report(c);
        // what one sequence needs at this context beside the weights, and the sum: whether it fits
        std::printf("memory at context %zu: weights %s + state %s (KV %s, SSM %s) = %s for one sequence\n", c,
                    MemoryReport::human(w.bytes).c_str(), MemoryReport::human(r.total_bytes).c_str(),
                    MemoryReport::human(r.kv_bytes).c_str(), MemoryReport::human(r.ssm_bytes).c_str(),
                    MemoryReport::human(w.bytes + r.total_bytes).c_str());
        std::printf("  state: %s\n", r.to_string().c_str());
    }
    return 0;
}

// The source's name and context length (for the GGUF metadata): a GGUF file's own, or the HF config's
// max_position_embeddings and the directory's name.
std::pair<std::string, std::size_t> source_identity(const std::string& src) {
    namespace fs = std::filesystem;
    if (hystack::cli::is_gguf_path(src)) {
        const auto f = hystack::io::GgufFile::open(src);
        const std::string name = f.has("general.name") ? f.get_string("general.name") : fs::path(src).stem().string();
        const std::size_t ctx = f.has("jamba.context_length") ? std::size_t(f.get_u64("jamba.context_length")) : 262144;
        return {name, ctx};
    }
    const auto cfg = hystack::io::read_jamba_config((fs::path(src) / "config.json").string());
    std::string name = fs::path(src).lexically_normal().filename().string();
    if (name.empty()) name = fs::path(src).lexically_normal().parent_path().filename().string();
    return {name, cfg.max_position_embeddings};
}

int convert(const hystack::cli::Args& a) {
    using hystack::MemoryReport;
    const auto t0 = clock_type::now();
    const auto [name, context] = source_identity(a.model_dir);
    auto lm = load(a.model_dir, a.weights);
    const double load_s = seconds_since(t0);
    const auto t1 = clock_type::now();
    hystack::io::JambaGgufSaveOptions opt;
    opt.name = name;
    opt.context_length = context;
    double last = -1;
    opt.progress = [&](std::size_t done, std::size_t total) {
        const double s = seconds_since(t1);
        if (s - last < 0.2 && done != total) return;
        last = s;
        std::fprintf(stderr, "\rwriting %s: %5.1f%% (%.0f MB)", a.out.c_str(), total ? 100.0 * double(done) / double(total) : 100.0,
                     double(done) / 1e6);
        std::fflush(stderr);
    };
    const auto info = hystack::io::save_jamba_gguf(lm, a.out, opt);
    const double write_s = seconds_since(t1);
    std::fprintf(stderr, "\r%60s\r", "");
    std::printf("wrote %s: %zu tensors (%zu q8_0, %zu bf16, %zu f32), %s of tensor data, file %s\n", a.out.c_str(),
                info.tensors, info.q8_0_tensors, info.bf16_tensors, info.f32_tensors,
                MemoryReport::human(info.tensor_bytes).c_str(), MemoryReport::human(info.file_bytes).c_str());
    std::printf("weights %s (general.file_type %u), general.name \"%s\", context_length %zu\n",
                hystack::to_string(info.weights), info.file_type, name.c_str(), context);
    std::printf("time: %.2f s (load %.2f s, write %.2f s)\n", load_s + write_s, load_s, write_s);
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
        if (a.command == "convert") return convert(a);
        return info(a);
    } catch (const hystack::cli::UsageError& e) {
        std::fprintf(stderr, "hystack-cli: %s\n%s", e.what(), hystack::cli::usage);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "\nhystack-cli: error: %s\n", e.what());
        return 1;
    }
}
