#pragma once
#include "../core/module.hpp"

// Filling a ParamList from a Checkpoint: every parameter matched to a tensor by name (accepting the
// older Jamba aliases), shape and dtype, every problem reported at once, nothing written unless
// there is none. Knows no model: the list comes from whoever owns the weights (a model's params()).
// Weight matrices are stored as LoadOptions::weights asks (as stored by default), converted row by row
// while loading, so no second copy of the model (nor of a tensor, but for one row) is ever held.

#include <cstddef>
#include <algorithm>
#include <bit>
#include <cstring>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../core/error.hpp"
#include "../core/param.hpp"
#include "../core/weight.hpp"
#include "checkpoint.hpp"
#include "safetensors_format.hpp"

namespace hystack::io {

/// Options for verify_params / load_params.
struct LoadOptions {
    /// Checkpoint tensors that may stay unused (e.g. "lm_head.weight" saved beside tied embeddings).
    std::vector<std::string> allow_unused;
    /// load_params calls this after each tensor it reads: (bytes of storage filled so far, total).
    std::function<void(std::size_t, std::size_t)> progress;
    /// Element type of the weight matrices: nullopt keeps each as stored (BF16 -> bf16, F32 and F16 ->
    /// f32, Q8_0 -> q8_0); f32 / bf16 / q8_0 converts to it while loading. A matrix whose rows do not fit
    /// the type (q8_0: a multiple of 32) stays f32. Other parameters (norms, biases, conv, A_log, D,
    /// the router) are f32 whatever this says.
    std::optional<DType> weights;
};

/// The weight type a stored tensor dtype keeps "as stored": BF16 -> bf16, Q8_0 -> q8_0, F32 and F16 -> f32.
inline DType stored_weight_type(std::string_view dtype) {
    if (dtype == "BF16") return DType::bf16;
    if (dtype == "Q8_0") return DType::q8_0;
    return DType::f32;
}

/// Whether a tensor of `dtype` can fill a parameter: F32, BF16 and F16 always, Q8_0 (GGUF) into weights.
inline bool dtype_loadable(std::string_view dtype) { return dtype_readable_as_float(dtype) || dtype == "Q8_0"; }

/// Bytes of n values of `dtype` (F32, F16, BF16; Q8_0: n a multiple of 32).
inline std::size_t source_bytes(std::string_view dtype, std::size_t n) {
    if (dtype == "Q8_0") return row_bytes(DType::q8_0, n);
    return n * dtype_size(dtype);
}

/// dst [n] = the n values of `dtype` in src, as floats (exact).
inline void decode_source(std::string_view dtype, std::span<const std::byte> src, std::span<float> dst) {
    if (dtype == "Q8_0")
        decode_row(DType::q8_0, src, dst);
    else
        SafetensorsFile::convert(dtype, src, dst);
}

/// Fills parameter p from its tensor, `dtype` values read by read(offset, dst bytes) (the shapes already
/// checked): a weight of the same type is read straight into its storage, another type converted row
/// by row (decode, then encode_row) through a chunk of scratch, a plain parameter decoded to floats.
template <class Read>
void fill_param(const ParamRef& p, std::string_view dtype, Read&& read) {
    const std::size_t n = param_numel(p);
    thread_local std::vector<std::byte> raw;
    thread_local std::vector<float> row;
    if (!p.weight) {
        check(p.data.size() == n, "fill_param: ", p.name, ": storage for ", p.data.size(), " floats, needs ", n);
        raw.resize(source_bytes(dtype, n));
        read(0, std::span<std::byte>(raw));
        decode_source(dtype, raw, p.data);
        return;
    }
    Weight& w = *p.weight;
    const std::size_t cols = w.cols();
    check(p.rows * cols == n, "fill_param: ", p.name, ": ", p.rows, " rows of ", cols, " for ", n, " values");
    const std::span<std::byte> dst = w.row_bytes(p.row0, p.rows);
    const bool same = std::endian::native == std::endian::little &&
                      ((dtype == "F32" && w.type() == DType::f32) || (dtype == "BF16" && w.type() == DType::bf16) ||
                       (dtype == "Q8_0" && w.type() == DType::q8_0));
    if (same) {
        read(0, dst);
        return;
    }
    // rows in chunks of ~256 KB of source: one read per chunk, each row decoded and encoded in cache
    const std::size_t sb = source_bytes(dtype, cols), db = row_bytes(w.type(), cols);
    const std::size_t chunk = std::max<std::size_t>(1, (std::size_t(256) << 10) / std::max<std::size_t>(sb, 1));
    raw.resize(std::min(chunk, p.rows) * sb);
    row.resize(cols);
    for (std::size_t r0 = 0; r0 < p.rows; r0 += chunk) {
        const std::size_t n = std::min(chunk, p.rows - r0);
        read(r0 * sb, std::span<std::byte>(raw.data(), n * sb));
        for (std::size_t r = 0; r < n; ++r) {
            decode_source(dtype, std::span<const std::byte>(raw.data() + r * sb, sb), row);
            encode_row(w.type(), row, dst.subspan((r0 + r) * db, db));
        }
    }
}

namespace detail {

// Checkpoint names that may hold HF parameter `name`, in order of preference: the name itself,
// ".moe." for ".feed_forward.", and on dense layers "feed_forward.experts.0.X" for "feed_forward.X".
inline std::vector<std::string> param_aliases(const std::string& name) {
    std::vector<std::string> out{name};
    const std::string ff = ".feed_forward.";
    const auto pos = name.find(ff);
    if (pos == std::string::npos) return out;
    const std::string head = name.substr(0, pos), tail = name.substr(pos + ff.size());
    out.push_back(head + ".moe." + tail);
    if (tail.rfind("experts.", 0) != 0 && tail.rfind("router.", 0) != 0) {
        out.push_back(head + ff + "experts.0." + tail);
        out.push_back(head + ".moe.experts.0." + tail);
    }
    return out;
}

// Matches each parameter to a checkpoint tensor; collects every problem. `resolved[i]` is the
// checkpoint name for params[i] (empty when absent).
inline std::vector<std::string> match_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt,
                                             bool check_data, std::vector<std::string>& resolved) {
    std::vector<std::string> problems;
    std::unordered_set<std::string> used, seen_params;
    resolved.assign(params.size(), {});
    for (std::size_t i = 0; i < params.size(); ++i) {
        const auto& p = params[i];
        if (!seen_params.insert(p.name).second) {
            problems.push_back("duplicate parameter " + p.name);
            continue;
        }
        std::vector<std::string> found;
        for (auto& a : param_aliases(p.name))
            if (ckpt.contains(a)) found.push_back(std::move(a));
        if (found.empty()) {
            if (!p.optional) problems.push_back("missing " + p.name + " " + shape_string(p.shape));
            continue;
        }
        for (const auto& f : found) used.insert(f);
        if (found.size() > 1) {
            std::string s = "ambiguous " + p.name + ": checkpoint has";
            for (const auto& f : found) s += " " + f;
            problems.push_back(s);
            continue;
        }
        const auto& t = ckpt.info(found[0]);
        const std::string label = found[0] == p.name ? p.name : found[0] + " (for " + p.name + ")";
        if (t.shape != p.shape) {
            problems.push_back("wrong shape " + label + ": expected " + shape_string(p.shape) + ", got " +
                               shape_string(t.shape));
            continue;
        }
        if (!dtype_readable_as_float(t.dtype)) {
            problems.push_back("unsupported dtype " + label + ": " + t.dtype + " (F32, BF16 and F16 load)");
            continue;
        }
        const std::size_t have = p.weight ? p.rows * p.weight->cols() : p.data.size();
        if (check_data && have != t.numel()) {
            problems.push_back("parameter " + p.name + " has storage for " + std::to_string(have) + " values, shape " +
                               shape_string(p.shape) + " needs " + std::to_string(t.numel()));
            continue;
        }
        resolved[i] = found[0];
    }
    const std::unordered_set<std::string> allowed(opt.allow_unused.begin(), opt.allow_unused.end());
    for (const auto& n : ckpt.names())
        if (!used.count(n) && !allowed.count(n))
            problems.push_back("unused " + n + " " + shape_string(ckpt.info(n).shape));
    return problems;
}

/// One hystack::error "what: path: N problems" listing every problem, a line each.
[[noreturn]] inline void throw_problems(const std::string& path, const std::vector<std::string>& problems,
                                        const char* what) {
    std::string msg = std::string(what) + ": " + path + ": " + std::to_string(problems.size()) +
                      (problems.size() == 1 ? " problem" : " problems");
    for (const auto& p : problems) msg += "\n  " + p;
    throw error(msg);
}
[[noreturn]] inline void throw_problems(const Checkpoint& ckpt, const std::vector<std::string>& problems,
                                        const char* what) {
    throw_problems(ckpt.path(), problems, what);
}

}  // namespace detail

/// Checks that `ckpt` holds exactly the tensors `params` names (aliases accepted), with their shapes
/// and a loadable dtype; throws one hystack::error listing every problem. Data spans are not used.
inline void verify_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt = {}) {
    std::vector<std::string> resolved;
    const auto problems = detail::match_params(ckpt, params, opt, false, resolved);
    if (!problems.empty()) detail::throw_problems(ckpt, problems, "verify_params");
}

/// Retypes the weights behind `params` as `opt.weights` asks (nullopt: as stored, from `dtype_of(i)`,
/// the stored dtype of params[i]), each weight once (by its first parameter: a stacked expert matrix
/// takes one type). A type a weight's rows do not fit gives f32. Weights already of the type are kept.
template <class DtypeOf>
void retype_weights(const ParamList& params, const LoadOptions& opt, DtypeOf&& dtype_of) {
    std::vector<const Weight*> done;
    for (std::size_t i = 0; i < params.size(); ++i) {
        const ParamRef& p = params[i];
        if (!p.weight || std::find(done.begin(), done.end(), p.weight) != done.end()) continue;
        const std::optional<std::string> dtype = dtype_of(i);
        if (!dtype) continue;  // absent (optional): its weight keeps its type
        done.push_back(p.weight);
        p.weight->retype(fitting_type(opt.weights ? *opt.weights : stored_weight_type(*dtype), p.weight->cols()));
    }
}

/// Fills every parameter from `ckpt` after checking names (aliases: ".moe." for ".feed_forward.", dense
/// "feed_forward.experts.0.X" for "feed_forward.X"), shapes, dtypes (F32, BF16, F16) and that no
/// checkpoint tensor is left unused. Weight matrices are retyped as opt.weights asks (retype_weights)
/// and converted while loading (fill_param); other parameters are read as floats. All problems are
/// reported in one hystack::error; nothing is written unless there are none. Optional parameters may be
/// absent (left untouched).
inline void load_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt = {}) {
    std::vector<std::string> resolved;
    const auto problems = detail::match_params(ckpt, params, opt, true, resolved);
    if (!problems.empty()) detail::throw_problems(ckpt, problems, "load_params");
    retype_weights(params, opt, [&](std::size_t i) -> std::optional<std::string> {
        if (resolved[i].empty()) return std::nullopt;
        return ckpt.info(resolved[i]).dtype;
    });
    std::size_t total = 0, done = 0;
    for (std::size_t i = 0; i < params.size(); ++i)
        if (!resolved[i].empty()) total += param_bytes(params[i]);
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (resolved[i].empty()) continue;
        const auto& file = ckpt.file_of(resolved[i]);
        const auto& t = file.info(resolved[i]);
        fill_param(params[i], t.dtype, [&](std::size_t off, std::span<std::byte> dst) { file.read_bytes(t, off, dst); });
        done += param_bytes(params[i]);
        if (opt.progress) opt.progress(done, total);
    }
}

}  // namespace hystack::io
