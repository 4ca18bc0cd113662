// libFuzzer target: HF Jamba config.json parsing and validation, then the expected parameter list
// of every config accepted (sizes are capped by validate(), so this stays small per input... or fails).
#include <hystack/io.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto cfg = hystack::io::parse_jamba_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
        // listing the expected names is linear in layers x experts: bound it so the fuzzer stays fast
        if (cfg.num_hidden_layers * cfg.num_experts <= 4096) (void)hystack::io::jamba_expected_params(cfg);
    } catch (const hystack::error&) {
    }
    return 0;
}
