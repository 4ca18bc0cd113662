#pragma once
#include "../core/module.hpp"

// MemoryReport: what one sequence's state costs at a context length, beside an all-attention stack.

#include <cstddef>
#include <sstream>
#include <string>

namespace hystack {

/// Memory of per-sequence state at a given context length, and the same figures for an
/// all-attention stack of the same shape (every layer attention with the same heads).
struct MemoryReport {
    std::size_t context_length = 0;
    std::size_t attention_layers = 0, mamba_layers = 0;  // layers whose state grows with the context (KV) / not (SSM)
    std::size_t kv_bytes = 0;   // KV caches of the attention layers
    std::size_t ssm_bytes = 0;  // fixed-size states of the recurrent layers (Mamba: conv + ssm)
    std::size_t total_bytes = 0;
    std::size_t all_attention_kv_bytes = 0;  // the same shape with attention in every layer
    /// all_attention_kv_bytes / total_bytes.
    double saving() const { return total_bytes ? double(all_attention_kv_bytes) / double(total_bytes) : 0.0; }

    static std::string human(std::size_t bytes) {
        const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
        double v = double(bytes);
        int u = 0;
        while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
        std::ostringstream os;
        os.precision(u ? 3 : 0);
        os << std::fixed << v << " " << units[u];
        return os.str();
    }
    /// "context 32768: KV 256.000 MiB (2 attention layers) + SSM 4.250 MiB (14 mamba layers) = ...; all-attention 2.000 GiB (7.9x)"
    std::string to_string() const {
        std::ostringstream os;
        os << "context " << context_length << ": KV " << human(kv_bytes) << " (" << attention_layers
           << " attention layers) + SSM " << human(ssm_bytes) << " (" << mamba_layers << " mamba layers) = "
           << human(total_bytes) << "; all-attention stack: " << human(all_attention_kv_bytes);
        os.precision(1);
        os << std::fixed << " (" << saving() << "x more)";
        return os.str();
    }
};

}  // namespace hystack
