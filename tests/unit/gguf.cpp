// GGUF reader/writer: round trips of every metadata type and of F32/F16/BF16/Q8_0 tensors, the
// writer's exact bytes (llama.cpp's layout), and one test per kind of malformed file, each built
// byte by byte here: truncation at every byte, bad magic and version, unknown types, bad alignment,
// tensors out of range / misaligned / overlapping, duplicates, lying counts, overflow.
#include <hystack/io.hpp>
#include <hystack/io/gguf.hpp>
#include <hystack/io/gguf_writer.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "catch.hpp"
#include "temp_dir.hpp"

using namespace hystack;
using namespace hystack::io;
namespace fs = std::filesystem;

namespace {


std::vector<std::byte> read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::byte> b(c.size());
    if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
    return b;
}

std::vector<std::byte> random_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::vector<std::byte> b(n);
    for (auto& x : b) x = std::byte(rng() & 0xff);
    return b;
}

// A GGUF file built byte by byte (little-endian), for files the writer would refuse to make.
struct Gguf {
    std::string b;
    Gguf& raw(std::string_view s) { return b.append(s), *this; }
    Gguf& u8(std::uint8_t v) { return b.push_back(char(v)), *this; }
    Gguf& u32(std::uint32_t v) {
        for (int i = 0; i < 4; ++i) b.push_back(char((v >> (8 * i)) & 0xff));
        return *this;
    }
    Gguf& u64(std::uint64_t v) {
        for (int i = 0; i < 8; ++i) b.push_back(char((v >> (8 * i)) & 0xff));
        return *this;
    }
    Gguf& str(std::string_view s) { return u64(s.size()).raw(s); }
    Gguf& header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
        return raw("GGUF").u32(version).u64(n_tensors).u64(n_kv);
    }
    Gguf& kv_u32(std::string_view key, std::uint32_t v) { return str(key).u32(4).u32(v); }
    Gguf& tensor(std::string_view name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset) {
        str(name).u32(std::uint32_t(ne.size()));
        for (auto d : ne) u64(d);
        return u32(type).u64(offset);
    }
    Gguf& pad(std::size_t align = 32) { return b.append((align - b.size() % align) % align, '\0'), *this; }
    Gguf& zeros(std::size_t n) { return b.append(n, '\0'), *this; }
    std::vector<std::byte> bytes() const {
        std::vector<std::byte> v(b.size());
        if (!b.empty()) std::memcpy(v.data(), b.data(), b.size());
        return v;
    }
};

GgufFile parse(const Gguf& g) { return GgufFile::from_bytes(g.bytes(), "test.gguf"); }

// Expects parsing to throw a hystack::error naming the file and containing `what`.
void expect_bad(const Gguf& g, const std::string& what) {
    const std::string msg = error_of([&] { (void)parse(g); });
    INFO(msg);
    CHECK(msg.find("test.gguf") != std::string::npos);
    CHECK(msg.find(what) != std::string::npos);
}

}  // namespace

TEST_CASE("ggml type table: names, block sizes, unknown ids", "[gguf]") {
    CHECK(to_string(GgmlType::F32) == "f32");
    CHECK(to_string(GgmlType::BF16) == "bf16");
    CHECK(to_string(GgmlType::Q8_0) == "q8_0");
    CHECK(to_string(GgmlType::Q4_K) == "q4_K");
    CHECK(to_string(GgmlType::IQ4_XS) == "iq4_xs");
    CHECK(to_string(GgmlType::MXFP4) == "mxfp4");
    CHECK(to_string(GgmlType(4)) == "unknown");
    CHECK(to_string(GgmlType(1000)) == "unknown");
    CHECK((ggml_block_size(GgmlType::F32) == 1 && ggml_block_bytes(GgmlType::F32) == 4));
    CHECK((ggml_block_size(GgmlType::F16) == 1 && ggml_block_bytes(GgmlType::F16) == 2));
    CHECK((ggml_block_size(GgmlType::Q8_0) == 32 && ggml_block_bytes(GgmlType::Q8_0) == 34));
    CHECK((ggml_block_size(GgmlType::Q4_0) == 32 && ggml_block_bytes(GgmlType::Q4_0) == 18));
    CHECK((ggml_block_size(GgmlType::Q4_K) == 256 && ggml_block_bytes(GgmlType::Q4_K) == 144));
    CHECK((ggml_block_size(GgmlType::Q6_K) == 256 && ggml_block_bytes(GgmlType::Q6_K) == 210));
    CHECK((ggml_block_size(GgmlType::TQ1_0) == 256 && ggml_block_bytes(GgmlType::TQ1_0) == 54));
    CHECK((ggml_block_size(GgmlType::MXFP4) == 32 && ggml_block_bytes(GgmlType::MXFP4) == 17));
    for (std::uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 0xffffffffu}) CHECK(!ggml_type_known(id));
    // every known id has a name and a consistent block
    for (std::uint32_t id = 0; id < 64; ++id)
        if (ggml_type_known(id)) {
            INFO(id);
            CHECK(!ggml_type_traits(id).name.empty());
            CHECK(ggml_type_traits(id).block_bytes > 0);
        }

    const std::vector<std::uint64_t> ne{64, 3, 2};
    CHECK(ggml_nbytes(GgmlType::Q8_0, ne, "t") == 2 * 3 * 2 * 34);
    CHECK(ggml_nbytes(GgmlType::F32, std::vector<std::uint64_t>{7, 0, 3}, "t") == 0);
    CHECK_ERROR("t: ne[0] = 33 is not a multiple of q8_0's block size 32",
                ggml_nbytes(GgmlType::Q8_0, std::vector<std::uint64_t>{33}, "t"));
    CHECK_ERROR("element count overflows", ggml_nbytes(GgmlType::F32, std::vector<std::uint64_t>{1ull << 32, 1ull << 32}, "t"));
    CHECK_ERROR("byte size overflows", ggml_nbytes(GgmlType::F64, std::vector<std::uint64_t>{1ull << 62}, "t"));
    CHECK_ERROR("exceeds INT64_MAX", ggml_nbytes(GgmlType::F32, std::vector<std::uint64_t>{~0ull}, "t"));
}

TEST_CASE("GGUF round trip: every metadata type", "[gguf]") {
    TempDir d;
    const auto path = d / "meta.gguf";
    const std::vector<std::pair<std::string, GgufValue>> want = {
        {"u8", std::uint8_t(200)},
        {"i8", std::int8_t(-100)},
        {"u16", std::uint16_t(65000)},
        {"i16", std::int16_t(-32000)},
        {"u32", std::uint32_t(4000000000u)},
        {"i32", std::int32_t(-2000000000)},
        {"f32", 1e-5f},
        {"bool.t", true},
        {"bool.f", false},
        {"string", "jamba"},
        {"string.empty", ""},
        {"u64", std::uint64_t(1) << 63},
        {"i64", std::int64_t(-1) << 62},
        {"f64", 0.1},
        {"a.u8", std::vector<std::uint8_t>{0, 1, 255}},
        {"a.i8", std::vector<std::int8_t>{-128, 127}},
        {"a.u16", std::vector<std::uint16_t>{1, 65535}},
        {"a.i16", std::vector<std::int16_t>{-1, 2}},
        {"a.u32", std::vector<std::uint32_t>{7, 8, 9}},
        {"a.i32", std::vector<std::int32_t>{0, 0, 0, 0, 4, 0, 0, 0}},
        {"a.f32", std::vector<float>{1.5f, -0.f, 3e38f}},
        {"a.bool", std::vector<bool>{true, false, true}},
        {"a.string", std::vector<std::string>{"a", "", "<|endoftext|>", std::string("nul\0inside", 10)}},
        {"a.u64", std::vector<std::uint64_t>{~0ull}},
        {"a.i64", std::vector<std::int64_t>{-5}},
        {"a.f64", std::vector<double>{2.5, -1e300}},
        {"a.empty", std::vector<std::int32_t>{}},
        {"a.nested", std::vector<GgufArray>{GgufArray(std::vector<std::int32_t>{1, 2}), GgufArray(std::vector<std::string>{"x"})}},
    };
    {
        GgufWriter w;
        for (const auto& [k, v] : want) w.set(k, v);
        w.begin(path);
        w.finish();
    }
    CHECK(!fs::exists(path + ".tmp"));
    const GgufFile f(path);
    CHECK(f.version() == 3);
    CHECK(f.alignment() == 32);
    CHECK(f.path() == path);
    CHECK(f.tensors().empty());
    REQUIRE(f.metadata().size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        INFO(want[i].first);
        CHECK(f.metadata()[i].key == want[i].first);  // file order kept
        CHECK(f.metadata()[i].value.type() == want[i].second.type());
        CHECK(f.metadata()[i].value == want[i].second);
    }
    CHECK(f.get("u8").type() == GgufValueType::UINT8);
    CHECK(f.get("a.u32").type_name() == "array of uint32");

    // typed getters: integers convert when the value fits
    CHECK(f.get_u32("u8") == 200);
    CHECK(f.get_u32("u32") == 4000000000u);
    CHECK(f.get_u64("u64") == (std::uint64_t(1) << 63));
    CHECK(f.get_i64("i8") == -100);
    CHECK(f.get_i32("i16") == -32000);
    CHECK(f.get_u64("u16") == 65000);
    CHECK(f.get_f32("f32") == 1e-5f);
    CHECK(f.get_f64("f32") == double(1e-5f));
    CHECK(f.get_f64("f64") == 0.1);
    CHECK(f.get_bool("bool.t"));
    CHECK(!f.get_bool("bool.f"));
    CHECK(f.get_string("string") == "jamba");
    CHECK(f.get_string("string.empty").empty());
    CHECK(f.get_int_array("a.i32") == std::vector<std::int64_t>{0, 0, 0, 0, 4, 0, 0, 0});
    CHECK(f.get_int_array("a.u16") == std::vector<std::int64_t>{1, 65535});
    CHECK(f.get_int_array("a.empty").empty());
    CHECK(f.get_f32_array("a.f32") == std::vector<float>{1.5f, -0.f, 3e38f});
    CHECK(f.get_string_array("a.string")[3] == std::string("nul\0inside", 10));
    const auto& nested = f.get_array("a.nested");
    CHECK(nested.type() == GgufValueType::ARRAY);
    REQUIRE(nested.size() == 2);
    CHECK(nested.at(1).as_array().at(0).as_string() == "x");
    const auto vals = f.get_array("a.bool").to_values();
    REQUIRE(vals.size() == 3);
    CHECK((vals[0].as_bool() && !vals[1].as_bool() && vals[2].as_bool()));
    CHECK(f.find("nope") == nullptr);
    CHECK(f.has("u8"));
    CHECK(f.get("u8").to_display() == "200");
    CHECK(f.get("string").to_display() == "\"jamba\"");
    CHECK(f.get("a.string").to_display() == "[4 x string]");
}

TEST_CASE("GGUF getters: wrong type, values that do not fit, missing key", "[gguf]") {
    TempDir d;
    const auto path = d / "g.gguf";
    {
        GgufWriter w;
        w.set("s", "text");
        w.set("neg", std::int32_t(-1));
        w.set("big", std::uint64_t(1) << 40);
        w.set("huge", ~std::uint64_t(0));
        w.set("f64", 0.5);
        w.set("b", true);
        w.set("ai", std::vector<std::int32_t>{1});
        w.set("au64", std::vector<std::uint64_t>{~0ull});
        w.set("af64", std::vector<double>{1.0});
        w.begin(path);
        w.finish();
    }
    const GgufFile f(path);
    CHECK_ERROR(path + ": metadata 's': expected uint32 (any integer type that fits), found string", f.get_u32("s"));
    CHECK_ERROR(path + ": metadata 'neg': value -1 (int32) does not fit uint32", f.get_u32("neg"));
    CHECK_ERROR("metadata 'neg': value -1 (int32) does not fit uint64", f.get_u64("neg"));
    CHECK_ERROR("metadata 'big': value 1099511627776 (uint64) does not fit uint32", f.get_u32("big"));
    CHECK_ERROR("metadata 'huge': value 18446744073709551615 (uint64) does not fit int64", f.get_i64("huge"));
    CHECK_ERROR("metadata 'b': expected uint64 (any integer type that fits), found bool", f.get_u64("b"));
    CHECK_ERROR("metadata 'f64': expected float32, found float64", f.get_f32("f64"));
    CHECK_ERROR("metadata 's': expected float64 (or float32), found string", f.get_f64("s"));
    CHECK_ERROR("metadata 'neg': expected bool, found int32", f.get_bool("neg"));
    CHECK_ERROR("metadata 'b': expected string, found bool", f.get_string("b"));
    CHECK_ERROR("metadata 's': expected array, found string", f.get_array("s"));
    CHECK_ERROR("metadata 's': expected array of integers, found string", f.get_int_array("s"));
    CHECK_ERROR("metadata 'af64': expected array of integers, found array of float64", f.get_int_array("af64"));
    CHECK_ERROR("metadata 'au64'[0]: value 18446744073709551615 does not fit int64", f.get_int_array("au64"));
    CHECK_ERROR("metadata 'ai': expected array of float32, found array of int32", f.get_f32_array("ai"));
    CHECK_ERROR("metadata 'ai': expected array of string, found array of int32", f.get_string_array("ai"));
    CHECK_ERROR(path + ": no metadata key 'missing'", f.get("missing"));
    CHECK_ERROR(path + ": no metadata key 'missing'", f.get_u32("missing"));
    CHECK_ERROR("index 1 out of range (1 elements)", f.get_array("ai").at(1));
}

TEST_CASE("GGUF round trip: F32/F16/BF16/Q8_0 tensors with odd shapes", "[gguf]") {
    TempDir d;
    const auto path = d / "t.gguf";
    struct Decl {
        std::string name;
        std::vector<std::uint64_t> ne;
        GgmlType type;
    };
    const std::vector<Decl> decls = {
        {"a.f32", {7, 3, 5}, GgmlType::F32},       {"b.f16", {5, 3}, GgmlType::F16},
        {"c.bf16", {3}, GgmlType::BF16},           {"d.q8_0", {64, 3}, GgmlType::Q8_0},
        {"e.q8_0", {32, 1, 1, 2}, GgmlType::Q8_0}, {"f.empty", {0, 4}, GgmlType::F32},
        {"g.f32", {1}, GgmlType::F32},
    };
    std::vector<std::vector<std::byte>> data;
    for (std::uint32_t align : {32u, 64u}) {
        INFO("alignment " << align);
        data.clear();
        {
            GgufWriter w;
            w.set("general.architecture", "test");
            if (align != 32) w.set("general.alignment", std::uint32_t(align));
            for (const auto& t : decls) {
                const auto& info = w.add_tensor(t.name, t.ne, t.type);
                data.push_back(random_bytes(info.bytes, unsigned(data.size() + align)));
            }
            w.begin(path);
            for (std::size_t i = 0; i < decls.size(); ++i) w.write_tensor(decls[i].name, data[i]);
            w.finish();
        }
        const auto f = GgufFile::open(path);
        CHECK(f.alignment() == align);
        CHECK(f.data_offset() % align == 0);
        REQUIRE(f.tensors().size() == decls.size());
        std::uint64_t expect_offset = 0;
        for (std::size_t i = 0; i < decls.size(); ++i) {
            const auto& t = f.tensors()[i];
            INFO(t.name);
            CHECK(t.name == decls[i].name);
            CHECK(t.ne == decls[i].ne);
            CHECK(t.type == decls[i].type);
            CHECK(t.bytes == data[i].size());
            CHECK(t.offset == expect_offset);  // llama.cpp's layout: declaration order, padded
            expect_offset += (t.bytes + align - 1) / align * align;
            CHECK(&f.tensor(t.name) == &t);
            const auto view = f.data(t.name);
            CHECK(view.size() == t.bytes);
            CHECK(std::equal(view.begin(), view.end(), data[i].begin(), data[i].end()));
            std::vector<std::byte> copy(t.bytes);
            f.read(t.name, copy);
            CHECK(copy == data[i]);
        }
        CHECK(f.file_size() == f.data_offset() + expect_offset);
        CHECK(f.tensor("a.f32").bytes == 7 * 3 * 5 * 4);
        CHECK(f.tensor("b.f16").bytes == 5 * 3 * 2);
        CHECK(f.tensor("d.q8_0").bytes == 2 * 3 * 34);
        CHECK(f.tensor("f.empty").bytes == 0);
        CHECK(f.tensor("a.f32").numel() == 105);
        CHECK(f.tensor("a.f32").shape() == std::vector<std::size_t>{5, 3, 7});
        CHECK(f.contains("c.bf16"));
        CHECK(!f.contains("nope"));
        CHECK_ERROR(path + ": no tensor named 'nope'", f.tensor("nope"));
        CHECK_ERROR(path + ": no tensor named 'nope'", f.data("nope"));
        std::vector<std::byte> small(3);
        CHECK_ERROR(path + ": tensor 'a.f32': expected a buffer of 420 bytes, got 3", f.read("a.f32", small));
        // the padding llama.cpp expects is zeros
        const auto all = read_all(path);
        const auto& g = f.tensor("g.f32");
        for (std::uint64_t p = f.data_offset() + g.offset + g.bytes; p < all.size(); ++p) CHECK(all[p] == std::byte{0});
    }
}

TEST_CASE("GGUF writer: exact bytes of a small file (llama.cpp's layout)", "[gguf]") {
    TempDir d;
    const auto path = d / "x.gguf";
    {
        GgufWriter w;
        w.set("k", std::uint32_t(7));
        w.set("s", std::vector<std::string>{"ab"});
        w.add_tensor("t", {2}, GgmlType::F32);
        w.begin(path);
        const float v[2] = {1.0f, -2.0f};
        w.write_tensor("t", std::as_bytes(std::span<const float>(v)));
        w.finish();
    }
    Gguf g;
    g.header(1, 2).kv_u32("k", 7).str("s").u32(9).u32(8).u64(1).str("ab").tensor("t", {2}, 0, 0).pad();
    g.u32(0x3f800000u).u32(0xc0000000u).pad();
    CHECK(read_all(path) == g.bytes());
}

TEST_CASE("GGUF writer: misuse is refused", "[gguf]") {
    TempDir d;
    const auto path = d / "w.gguf";
    {
        GgufWriter w;
        w.set("a", std::uint32_t(1));
        CHECK_ERROR("GgufWriter: duplicate metadata key 'a'", w.set("a", std::uint32_t(2)));
        CHECK_ERROR("GgufWriter: empty metadata key", w.set("", std::uint32_t(2)));
        CHECK_ERROR("general.alignment: expected uint32, found uint64", w.set("general.alignment", std::uint64_t(32)));
    }
    {
        GgufWriter w;
        CHECK_ERROR("general.alignment = 48 is not a power of two", w.set("general.alignment", std::uint32_t(48)));
    }
    {
        GgufWriter w;
        CHECK_ERROR("general.alignment = 0 is not a power of two", w.set("general.alignment", std::uint32_t(0)));
        CHECK_ERROR("tensor 'q': ne[0] = 33 is not a multiple of q8_0's block size 32",
                    w.add_tensor("q", {33, 2}, GgmlType::Q8_0));
        CHECK_ERROR("tensor 'z': 0 dims (expected 1..4)", w.add_tensor("z", {}, GgmlType::F32));
        CHECK_ERROR("tensor 'five': 5 dims (expected 1..4)", w.add_tensor("five", {1, 1, 1, 1, 1}, GgmlType::F32));
        CHECK_ERROR("tensor 'u': unknown ggml type id 4", w.add_tensor("u", {1}, GgmlType(4)));
        CHECK_ERROR("llama.cpp reads at most 63", w.add_tensor(std::string(64, 'n'), {1}, GgmlType::F32));
        CHECK_ERROR("GgufWriter: empty tensor name", w.add_tensor("", {1}, GgmlType::F32));
        w.add_tensor("t1", {4}, GgmlType::F32);
        w.add_tensor("t2", {2}, GgmlType::F16);
        CHECK_ERROR("GgufWriter: duplicate tensor name 't1'", w.add_tensor("t1", {4}, GgmlType::F32));
        std::vector<std::byte> b16(16), b4(4), b3(3);
        CHECK_ERROR("write_tensor('t1') before begin()", w.write_tensor("t1", b16));
        CHECK_ERROR("finish() before begin()", w.finish());
        w.begin(path);
        CHECK(fs::exists(path + ".tmp"));
        CHECK_ERROR("set('late') after begin()", w.set("late", true));
        CHECK_ERROR("add_tensor('late') after begin()", w.add_tensor("late", {1}, GgmlType::F32));
        CHECK_ERROR("begin('" + path + "') called twice", w.begin(path));
        CHECK_ERROR("write_tensor('t2'): expected tensor 't1' next (tensors are written in declared order)",
                    w.write_tensor("t2", b4));
        CHECK_ERROR("tensor 't1': [4] x f32 takes 16 bytes, got 3", w.write_tensor("t1", b3));
        w.write_tensor("t1", b16);
        CHECK_ERROR(path + ": tensor 't2' declared but not written", w.finish());
        // the failed file is gone, under both names
        CHECK(!fs::exists(path));
        CHECK(!fs::exists(path + ".tmp"));
    }
    {
        // an abandoned writer removes its temporary
        GgufWriter w;
        w.add_tensor("t", {1}, GgmlType::F32);
        w.add_tensor("u", {1}, GgmlType::F32);
        w.begin(path);
        CHECK(fs::exists(path + ".tmp"));
    }
    CHECK(!fs::exists(path + ".tmp"));
    CHECK(!fs::exists(path));
    {
        GgufWriter w;
        w.add_tensor("t", {1}, GgmlType::F32);
        w.add_tensor("u", {1}, GgmlType::F32);
        w.add_tensor("v", {1}, GgmlType::F32);
        w.begin(path);
        CHECK_ERROR("tensor 't' and 2 more declared but not written", w.finish());
    }
    {
        GgufWriter w;
        w.set("deep", std::vector<GgufArray>{GgufArray(std::vector<GgufArray>{GgufArray(std::vector<std::int32_t>{})})});
        w.set("deeper", std::vector<GgufArray>{GgufArray(std::vector<GgufArray>{GgufArray(std::vector<GgufArray>{
            GgufArray(std::vector<std::int32_t>{})})})});
        CHECK_ERROR("metadata 'deeper': arrays nested deeper than 3 levels", w.begin(path));
    }
    CHECK_ERROR("cannot create file", [&] {
        GgufWriter w;
        w.begin(d / "no/such/dir/x.gguf");
    }());
}

TEST_CASE("GGUF reader: truncated at every byte", "[gguf]") {
    TempDir d;
    const auto path = d / "small.gguf";
    {
        GgufWriter w;
        w.set("general.name", "small");
        w.set("flag", true);
        w.set("ids", std::vector<std::int32_t>{1, 2, 3});
        w.set("toks", std::vector<std::string>{"a", "bc"});
        w.set("eps", 1e-6f);
        w.add_tensor("w", {32, 2}, GgmlType::Q8_0);
        w.add_tensor("b", {8}, GgmlType::F32);  // 32 bytes: the file ends with its last byte
        w.begin(path);
        w.write_tensor("w", random_bytes(68, 1));
        w.write_tensor("b", random_bytes(32, 2));
        w.finish();
    }
    const auto all = read_all(path);
    const auto f = GgufFile::from_bytes(all, "small.gguf");
    REQUIRE(f.tensors().size() == 2);
    REQUIRE(f.data_offset() + f.tensor("b").offset + 32 == all.size());
    for (std::size_t n = 0; n < all.size(); ++n) {
        INFO("prefix of " << n << " bytes");
        std::vector<std::byte> prefix(all.begin(), all.begin() + std::ptrdiff_t(n));
        const std::string msg = error_of([&] { (void)GgufFile::from_bytes(std::move(prefix), "small.gguf"); });
        CHECK(msg.find("small.gguf: ") == 0);
        // in the header: a short read or a count the bytes left cannot hold; after it: tensor data missing
        CHECK((msg.find("truncated file") != std::string::npos || msg.find("cannot fit") != std::string::npos ||
               msg.find("lie past the end of the file") != std::string::npos));
        if (n <= f.data_offset() - 32) CHECK(msg.find("lie past the end") == std::string::npos);
    }
    CHECK(error_of([&] { (void)GgufFile::from_bytes({}, "small.gguf"); }) ==
          "small.gguf: truncated file: the magic at byte 0 needs 4 bytes, 0 remain");
}

TEST_CASE("GGUF reader: bad magic and versions", "[gguf]") {
    expect_bad(Gguf().raw("GGML").u32(3).u64(0).u64(0), "not a GGUF file (starts with bytes 47 47 4d 4c, expected \"GGUF\"");
    expect_bad(Gguf().header(0, 0, 1), "GGUF version 1 is not supported (only version 3");
    expect_bad(Gguf().header(0, 0, 2), "GGUF version 2 is not supported");
    expect_bad(Gguf().header(0, 0, 4), "unsupported GGUF version 4 (expected 3)");
    expect_bad(Gguf().header(0, 0, 0x03000000u), "big-endian GGUF file");
    expect_bad(Gguf().raw("GGUF").u32(3).u64(0), "truncated file: metadata_kv_count at byte 16 needs 8 bytes, 0 remain");
    // the smallest valid file
    const auto f = parse(Gguf().header(0, 0));
    CHECK(f.metadata().empty());
    CHECK(f.tensors().empty());
    CHECK(f.data_offset() == 32);
}

TEST_CASE("GGUF reader: malformed metadata", "[gguf]") {
    expect_bad(Gguf().header(0, 1).str("k").u32(13).u32(0), "metadata 'k': unknown value type 13 at byte 33 (expected 0..12");
    expect_bad(Gguf().header(0, 1).str("k").u32(9).u32(99).u64(0), "metadata 'k': unknown value type 99");
    expect_bad(Gguf().header(0, 1).str("k").u32(7).u8(2), "metadata 'k': bool value 2 at byte 37 (expected 0 or 1)");
    expect_bad(Gguf().header(0, 1).str("k").u32(9).u32(7).u64(2).u8(1).u8(5),
               "element 1 of metadata 'k': bool value 5 at byte 50 (expected 0 or 1)");
    expect_bad(Gguf().header(0, 2).kv_u32("k", 1).kv_u32("k", 2), "duplicate metadata key 'k' (at byte 41)");
    // lying counts and lengths: refused before anything is allocated
    expect_bad(Gguf().header(0, 1ull << 60).kv_u32("k", 1),
               "metadata_kv_count 1152921504606846976 cannot fit in the 17 bytes after the header fields");
    expect_bad(Gguf().header(1ull << 40, 0).zeros(64), "tensor_count 1099511627776 cannot fit in the 64 bytes");
    expect_bad(Gguf().header(0, 1).u64(~0ull).zeros(16),
               "truncated file: key of metadata entry 0: string of 18446744073709551615 bytes at byte 32, 16 remain");
    expect_bad(Gguf().header(0, 1).str("k").u32(8).u64(1ull << 50).raw("abc"), "metadata 'k': string of 1125899906842624 bytes");
    expect_bad(Gguf().header(0, 1).str("k").u32(9).u32(4).u64(1ull << 61).zeros(16),
               "metadata 'k': array of 2305843009213693952 uint32 at byte 41 cannot fit in the 16 bytes left");
    expect_bad(Gguf().header(0, 1).str("k").u32(9).u32(8).u64(2).str("a").u64(5).raw("ab"),
               "truncated file: element 1 of metadata 'k': string of 5 bytes at byte 66, 2 remain");
    expect_bad(Gguf().header(0, 1).str("k").u32(9).u32(9).u64(1).u32(9).u64(1).u32(9).u64(1).u32(4).u64(0),
               "metadata 'k': arrays nested deeper than 3 levels");
    // nesting up to the limit is read
    const auto f = parse(Gguf().header(0, 1).str("k").u32(9).u32(9).u64(1).u32(9).u64(1).u32(4).u64(1).u32(7));
    CHECK(f.get_array("k").at(0).as_array().at(0).as_array().at(0).as_u32() == 7);
    // general.alignment: a uint32 power of two
    expect_bad(Gguf().header(0, 1).kv_u32("general.alignment", 0), "metadata 'general.alignment' = 0 is not a power of two");
    expect_bad(Gguf().header(0, 1).kv_u32("general.alignment", 24), "metadata 'general.alignment' = 24 is not a power of two");
    expect_bad(Gguf().header(0, 1).str("general.alignment").u32(10).u64(32),
               "metadata 'general.alignment': expected uint32, found uint64");
}

TEST_CASE("GGUF reader: malformed tensor infos", "[gguf]") {
    auto one = [](std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset, std::size_t data) {
        return Gguf().header(1, 0).tensor("w", std::move(ne), type, offset).pad().zeros(data);
    };
    CHECK(parse(one({4, 2}, 0, 0, 32)).tensor("w").bytes == 32);
    expect_bad(one({4}, 4, 0, 32), "tensor 'w': unknown ggml type id 4 at byte 45 (a type removed from ggml)");
    expect_bad(one({4}, 99, 0, 32), "tensor 'w': unknown ggml type id 99 at byte 45");
    expect_bad(Gguf().header(1, 0).str("w").u32(0).u32(0).u64(0).pad(), "tensor 'w': n_dims = 0 (expected 1..4)");
    expect_bad(one({1, 1, 1, 1, 1}, 0, 0, 32), "tensor 'w': n_dims = 5 (expected 1..4)");
    expect_bad(one({33}, 8, 0, 64), "tensor 'w': ne[0] = 33 is not a multiple of q8_0's block size 32");
    expect_bad(one({1ull << 32, 1ull << 32}, 0, 0, 32), "tensor 'w': element count overflows (ne [4294967296, 4294967296])");
    expect_bad(one({1ull << 63}, 0, 0, 32), "tensor 'w': ne[0] = 9223372036854775808 exceeds INT64_MAX");
    expect_bad(one({1ull << 62}, 28, 0, 32), "tensor 'w': byte size overflows");
    expect_bad(one({4}, 0, 16, 64), "tensor 'w': offset 16 is not a multiple of the alignment 32");
    expect_bad(one({4}, 0, 32, 32), "tensor 'w': 16 bytes at offset 32 lie past the end of the file (the data section holds 32 bytes");
    expect_bad(one({4}, 0, 1ull << 63, 32), "tensor 'w': 16 bytes at offset 9223372036854775808 lie past the end");
    expect_bad(one({8}, 0, 0, 31), "tensor 'w': 32 bytes at offset 0 lie past the end of the file");
    expect_bad(Gguf().header(1, 0).tensor("w", {4}, 0, 0), "tensor 'w': 16 bytes at offset 0 lie past the end of the file (the data section holds 0 bytes");
    expect_bad(Gguf().header(1, 0).str("w").u32(4).u64(1).u64(1).u64(1),
               "truncated file: dimensions of tensor 'w' at byte 61 needs 8 bytes, 0 remain");
    expect_bad(Gguf().header(2, 0).tensor("w", {4}, 0, 0).tensor("w", {4}, 0, 32).pad().zeros(64), "duplicate tensor name 'w'");
    expect_bad(Gguf().header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {4}, 0, 32).pad().zeros(64),
               "tensor 'b' (16 bytes at offset 32) overlaps tensor 'a' (64 bytes at offset 0)");
    // with alignment 16: a tensor may start 16 bytes in; with gaps and out of order is fine, empty tensors overlap nothing
    const auto f = parse(Gguf().header(4, 1).kv_u32("general.alignment", 16).tensor("b", {4}, 0, 48).tensor("a", {4}, 0, 16)
                             .tensor("e", {0, 3}, 0, 16).tensor("z", {4}, 1, 0).pad(16).zeros(64));
    CHECK(f.alignment() == 16);
    CHECK(f.data_offset() % 16 == 0);
    CHECK(f.tensor("e").bytes == 0);
    CHECK(f.data("e").empty());
    CHECK(f.tensor("z").type == GgmlType::F16);
    // a file that ends at its header holds only empty tensors
    const auto g = parse(Gguf().header(1, 0).tensor("e", {0}, 0, 0));
    CHECK(g.data_offset() > g.file_size());
    CHECK(g.data("e").empty());
    std::vector<std::byte> none;
    g.read("e", none);
    expect_bad(Gguf().header(2, 1).kv_u32("general.alignment", 16).tensor("a", {8}, 0, 16).tensor("b", {4}, 0, 32).pad(16).zeros(64),
               "tensor 'b' (16 bytes at offset 32) overlaps tensor 'a' (32 bytes at offset 16)");
}

TEST_CASE("GGUF reader: files on disk", "[gguf]") {
    TempDir d;
    CHECK_ERROR("cannot open file (no such file)", GgufFile(d / "missing.gguf"));
    CHECK_ERROR("is a directory", GgufFile(d.path.string()));
    std::ofstream(d / "empty.gguf").close();
    CHECK_ERROR(d / "empty.gguf" + ": truncated file: the magic at byte 0", GgufFile(d / "empty.gguf"));
}
