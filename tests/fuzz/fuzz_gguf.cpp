// libFuzzer target: the GGUF parser (header, metadata, tensor table validation), then every accessor
// on what it accepted: each metadata value through every typed getter, each tensor's bytes in place
// and copied. Any input must either parse or raise hystack::error; a crash, an uncaught exception
// of another type, a hang or a big allocation is a bug.
#include <hystack/io.hpp>
#include <hystack/io/gguf.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <variant>
#include <vector>

namespace {

// Calls f and swallows the hystack::error a wrong-type getter throws.
template <class F>
void quietly(F&& f) {
    try {
        f();
    } catch (const hystack::error&) {
    }
}

void touch(const hystack::io::GgufValue& v) {
    quietly([&] { (void)v.as_u64(); });
    quietly([&] { (void)v.as_i64(); });
    quietly([&] { (void)v.as_u32(); });
    quietly([&] { (void)v.as_i32(); });
    quietly([&] { (void)v.as_f32(); });
    quietly([&] { (void)v.as_f64(); });
    quietly([&] { (void)v.as_bool(); });
    quietly([&] { (void)v.as_string(); });
    quietly([&] { (void)v.as_int_array(); });
    quietly([&] { (void)v.as_f32_array(); });
    quietly([&] { (void)v.as_string_array(); });
    (void)v.type_name();
    (void)v.to_display();
    if (const auto* a = v.get_if<hystack::io::GgufArray>()) {
        // elements one by one (nested arrays recurse: depth is capped by the parser)
        const std::size_t n = a->size();
        for (std::size_t i = 0; i < n && i < 64; ++i) touch(a->at(i));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<std::byte> bytes(size);
    if (size) std::memcpy(bytes.data(), data, size);
    try {
        const auto f = hystack::io::GgufFile::from_bytes(std::move(bytes), "fuzz");
        if (f.version() != 3 || f.alignment() == 0 || f.data_offset() % f.alignment() != 0) __builtin_trap();
        for (const auto& kv : f.metadata()) {
            if (f.find(kv.key) != &kv.value) __builtin_trap();
            touch(kv.value);
        }
        std::vector<std::byte> copy;
        for (const auto& t : f.tensors()) {
            if (&f.tensor(t.name) != &t) __builtin_trap();
            const auto view = f.data(t);
            // non-empty data lies inside the file (an empty tensor may sit past a file that ends at its header)
            if (view.size() != t.bytes || (t.bytes && f.data_offset() + t.offset + t.bytes > f.file_size()))
                __builtin_trap();
            // the data lies inside the input, so this copy is bounded by the input size
            copy.resize(std::size_t(t.bytes));
            f.read(t, copy);
            if (!copy.empty() && std::memcmp(copy.data(), view.data(), copy.size()) != 0) __builtin_trap();
        }
    } catch (const hystack::error&) {
    }
    return 0;
}
