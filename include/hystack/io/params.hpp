#pragma once
#include "../core/module.hpp"

// Filling a ParamList from a Checkpoint: every parameter matched to a tensor by name (accepting the
// older Jamba aliases), shape and dtype, every problem reported at once, nothing written unless
// there is none. Knows no model: the list comes from whoever owns the weights (a model's params()).

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../core/error.hpp"
#include "../core/param.hpp"
#include "checkpoint.hpp"
#include "safetensors_format.hpp"

namespace hystack::io {

/// Options for verify_params / load_params.
struct LoadOptions {
    /// Checkpoint tensors that may stay unused (e.g. "lm_head.weight" saved beside tied embeddings).
    std::vector<std::string> allow_unused;
    /// load_params calls this after each tensor it reads: (bytes of float storage filled so far, total).
    std::function<void(std::size_t, std::size_t)> progress;
};

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
        if (check_data && p.data.size() != t.numel()) {
            problems.push_back("parameter " + p.name + " has storage for " + std::to_string(p.data.size()) +
                               " floats, shape " + shape_string(p.shape) + " needs " + std::to_string(t.numel()));
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

inline void throw_problems(const Checkpoint& ckpt, const std::vector<std::string>& problems, const char* what) {
    std::string msg = std::string(what) + ": " + ckpt.path() + ": " + std::to_string(problems.size()) +
                      (problems.size() == 1 ? " problem" : " problems");
    for (const auto& p : problems) msg += "\n  " + p;
    throw error(msg);
}

}  // namespace detail

/// Checks that `ckpt` holds exactly the tensors `params` names (aliases accepted), with their shapes
/// and a loadable dtype; throws one hystack::error listing every problem. Data spans are not used.
inline void verify_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt = {}) {
    std::vector<std::string> resolved;
    const auto problems = detail::match_params(ckpt, params, opt, false, resolved);
    if (!problems.empty()) detail::throw_problems(ckpt, problems, "verify_params");
}

/// Fills every parameter's span from `ckpt` (F32/BF16/F16 converted exactly to float) after checking
/// names (aliases: ".moe." for ".feed_forward.", dense "feed_forward.experts.0.X" for
/// "feed_forward.X"), shapes, dtypes and that no checkpoint tensor is left unused. All problems are
/// reported in one hystack::error; nothing is written unless there are none. Optional parameters may be
/// absent (their spans are left untouched).
inline void load_params(const Checkpoint& ckpt, const ParamList& params, const LoadOptions& opt = {}) {
    std::vector<std::string> resolved;
    const auto problems = detail::match_params(ckpt, params, opt, true, resolved);
    if (!problems.empty()) detail::throw_problems(ckpt, problems, "load_params");
    std::size_t total = 0, done = 0;
    for (std::size_t i = 0; i < params.size(); ++i)
        if (!resolved[i].empty()) total += params[i].data.size_bytes();
    for (std::size_t i = 0; i < params.size(); ++i) {
        if (resolved[i].empty()) continue;
        ckpt.read_into(resolved[i], params[i].data);
        done += params[i].data.size_bytes();
        if (opt.progress) opt.progress(done, total);
    }
}

}  // namespace hystack::io
