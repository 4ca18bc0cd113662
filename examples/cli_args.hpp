#pragma once
// Argument parsing of hystack-cli (examples/hystack_cli.cpp), kept in a header so the unit tests
// (tests/unit/model.cpp) check every accepted form and every error.
#include <hystack/model.hpp>

#include <charconv>
#include <cstdlib>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hystack::cli {

inline constexpr const char* usage =
    "usage:\n"
    "  hystack-cli generate MODEL (--prompt TEXT | --ids IDS) [-n N] [--temperature T] [--top-k K]\n"
    "                       [--top-p P] [--seed S] [--threads T] [--max-context N] [--weights TYPE]\n"
    "  hystack-cli logits MODEL --ids IDS --out FILE.safetensors [--threads T] [--weights TYPE]\n"
    "  hystack-cli info MODEL [--context N]... [--weights TYPE]\n"
    "  hystack-cli convert MODEL OUT.gguf [--weights TYPE]\n"
    "MODEL is an HF Jamba checkpoint directory (config.json, model.safetensors or a sharded index) or a\n"
    "llama.cpp jamba GGUF file (a path ending in .gguf). --weights f32|bf16|q8_0 converts the weight\n"
    "matrices while loading (default: as stored); convert writes the model as a jamba GGUF file.\n"
    "--prompt is tokenized as bytes (vocabulary of 256 without tokenizer); otherwise pass token ids:\n"
    "IDS is a comma- or space-separated list such as 1,2,3. --temperature 0 is greedy.\n";

/// A bad command line: main prints the message and the usage text and exits with status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Args {
    std::string command;  // generate | logits | info | convert
    std::string model_dir;  // an HF directory or a .gguf file
    std::optional<std::string> prompt;
    std::optional<std::vector<token_id>> ids;
    std::size_t n = 32;
    SamplingParams sampling{0.8f, 40, 0.95f, 0};
    std::size_t threads = 1;
    std::size_t max_context = 0;  // 0: prompt + n
    std::string out;  // logits: --out FILE.safetensors; convert: OUT.gguf
    std::optional<DType> weights;  // --weights: nullopt keeps the stored types
    std::vector<std::size_t> contexts;  // info: memory report at these context lengths
    bool help = false;
};

inline std::vector<token_id> parse_ids(std::string_view s) {
    std::vector<token_id> ids;
    std::size_t i = 0;
    while (i < s.size()) {
        if (s[i] == ',' || s[i] == ' ') {
            ++i;
            continue;
        }
        std::size_t j = i;
        while (j < s.size() && s[j] != ',' && s[j] != ' ') ++j;
        long long v = 0;
        auto [p, ec] = std::from_chars(s.data() + i, s.data() + j, v);
        if (ec != std::errc() || p != s.data() + j || v < 0 || v > INT32_MAX)
            throw UsageError("--ids: '" + std::string(s.substr(i, j - i)) + "' is not a token id");
        ids.push_back(token_id(v));
        i = j;
    }
    if (ids.empty()) throw UsageError("--ids: expected at least one token id");
    return ids;
}

/// A weight type name for --weights ("f32", "bf16", "q8_0"); an unknown one names the valid ones.
inline DType parse_weights(std::string_view s) {
    try {
        return dtype_from_string(std::string(s));
    } catch (const hystack::error& e) {
        throw UsageError(std::string("--weights: ") + e.what());
    }
}

/// Whether a model path names a GGUF file (else it is an HF checkpoint directory).
inline bool is_gguf_path(std::string_view path) { return path.ends_with(".gguf"); }

namespace detail {
template <class T>
T parse_number(std::string_view flag, std::string_view v) {
    T x{};
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc() || p != v.data() + v.size() || v.empty())
        throw UsageError(std::string(flag) + ": '" + std::string(v) + "' is not a valid number");
    return x;
}
inline float parse_float(std::string_view flag, std::string_view v) {
    // from_chars for float is missing in older libstdc++: strtof with a full-match check.
    std::string s(v);
    char* end = nullptr;
    const float x = std::strtof(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size())
        throw UsageError(std::string(flag) + ": '" + s + "' is not a valid number");
    return x;
}
}  // namespace detail

/// Parses argv (argv[0] is the program). Throws UsageError on any bad argument.
inline Args parse(int argc, const char* const* argv) {
    Args a;
    std::vector<std::string_view> v(argv + 1, argv + argc);
    if (v.empty()) throw UsageError("missing command");
    if (v[0] == "-h" || v[0] == "--help" || v[0] == "help") {
        a.help = true;
        return a;
    }
    a.command = std::string(v[0]);
    if (a.command != "generate" && a.command != "logits" && a.command != "info" && a.command != "convert")
        throw UsageError("unknown command '" + a.command + "'");
    if (v.size() < 2 || v[1].starts_with("-")) throw UsageError(a.command + ": missing MODEL");
    a.model_dir = std::string(v[1]);
    std::size_t first = 2;
    if (a.command == "convert") {
        if (v.size() < 3 || v[2].starts_with("-")) throw UsageError("convert: missing OUT.gguf");
        a.out = std::string(v[2]);
        if (!is_gguf_path(a.out)) throw UsageError("convert: OUT '" + a.out + "' does not end in .gguf");
        first = 3;
    }
    for (std::size_t i = first; i < v.size(); ++i) {
        const std::string_view f = v[i];
        auto value = [&]() -> std::string_view {
            if (i + 1 >= v.size()) throw UsageError(std::string(f) + ": missing value");
            return v[++i];
        };
        const bool gen = a.command == "generate";
        if (f == "-h" || f == "--help") {
            a.help = true;
        } else if (f == "--prompt" && gen) {
            a.prompt = std::string(value());
        } else if (f == "--weights") {
            a.weights = parse_weights(value());
        } else if (f == "--ids" && (gen || a.command == "logits")) {
            a.ids = parse_ids(value());
        } else if ((f == "-n" || f == "--n") && gen) {
            a.n = detail::parse_number<std::size_t>(f, value());
        } else if (f == "--temperature" && gen) {
            a.sampling.temperature = detail::parse_float(f, value());
        } else if (f == "--top-k" && gen) {
            a.sampling.top_k = detail::parse_number<std::size_t>(f, value());
        } else if (f == "--top-p" && gen) {
            a.sampling.top_p = detail::parse_float(f, value());
        } else if (f == "--seed" && gen) {
            a.sampling.seed = detail::parse_number<std::uint64_t>(f, value());
        } else if (f == "--threads" && (gen || a.command == "logits")) {
            a.threads = detail::parse_number<std::size_t>(f, value());
            if (a.threads == 0 || a.threads > 1024) throw UsageError("--threads: expected 1 to 1024");
        } else if (f == "--max-context" && gen) {
            a.max_context = detail::parse_number<std::size_t>(f, value());
        } else if (f == "--out" && a.command == "logits") {
            a.out = std::string(value());
        } else if (f == "--context" && a.command == "info") {
            a.contexts.push_back(detail::parse_number<std::size_t>(f, value()));
        } else {
            throw UsageError(a.command + ": unknown option '" + std::string(f) + "'");
        }
    }
    if (a.help) return a;
    if (a.command == "generate") {
        if (a.prompt && a.ids) throw UsageError("generate: give either --prompt or --ids, not both");
        if (!a.prompt && !a.ids) throw UsageError("generate: missing --prompt TEXT or --ids IDS");
        if (a.prompt && a.prompt->empty()) throw UsageError("generate: --prompt is empty");
        try {
            a.sampling.validate();
        } catch (const hystack::error& e) {
            throw UsageError(std::string("generate: ") + e.what());
        }
    } else if (a.command == "logits") {
        if (!a.ids) throw UsageError("logits: missing --ids IDS");
        if (a.out.empty()) throw UsageError("logits: missing --out FILE.safetensors");
    } else if (a.command == "info" && a.contexts.empty()) {
        a.contexts = {4096, 32768, 262144};
    }
    return a;
}

/// Byte-level tokens of a text (vocabulary 256).
inline std::vector<token_id> bytes_to_ids(std::string_view text) {
    std::vector<token_id> ids;
    for (unsigned char c : text) ids.push_back(token_id(c));
    return ids;
}

}  // namespace hystack::cli
