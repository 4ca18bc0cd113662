// libFuzzer target: HF Jamba config.json parsing and validation, then, for every config accepted, the
// stack shape and schedule it implies, validated (no model is allocated: sizes are only checked).
#include <hystack/io.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto cfg = hystack::io::parse_jamba_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
        const auto mc = hystack::io::jamba_model_config(cfg);
        const auto& s = mc.stack;
        // schedules are linear in layers: bound them so the fuzzer stays fast
        if (s.num_layers <= 4096)
            s.validate(hystack::Schedule::from_periods(s.num_layers, s.attn_layer_period, s.attn_layer_offset, s.ff_schedule()));
    } catch (const hystack::error&) {
    }
    return 0;
}
