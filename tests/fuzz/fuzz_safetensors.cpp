// libFuzzer target: the safetensors header parser and tensor table validation, then reading every
// tensor the parser accepted. Any input must either parse or raise hystack::error; a crash, an
// uncaught exception of another type, a hang or a big allocation is a bug.
#include <hystack/io.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::byte> bytes(size);
    if (size) std::memcpy(bytes.data(), data, size);
    try {
        const auto f = hystack::io::SafetensorsFile::from_bytes(std::move(bytes), "fuzz");
        for (const auto& t : f.tensors()) {
            (void)f.info(t.name);
            const auto raw = f.raw(t);
            if (raw.size() != t.nbytes()) __builtin_trap();
            if (hystack::io::dtype_readable_as_float(t.dtype)) {
                // the data section is part of the input, so numel is bounded by the input size
                const auto v = f.read_float(t.name);
                if (v.size() != t.numel()) __builtin_trap();
            }
        }
        for (const auto& [k, v] : f.metadata()) (void)k, (void)v;
    } catch (const hystack::error&) {
    }
    return 0;
}
