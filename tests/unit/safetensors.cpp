// safetensors reader/writer: round trips, exact dtype conversion, in-place views, sharded
// checkpoints, and one test per kind of malformed file (each written by the test itself).
#include <hystack/io.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "catch.hpp"
#include "temp_dir.hpp"

using namespace hystack;
using namespace hystack::io;
namespace fs = std::filesystem;

namespace {


void write_bytes(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::string le64(std::uint64_t n) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[std::size_t(i)] = char((n >> (8 * i)) & 0xff);
    return s;
}

// 8-byte length + header + data.
std::string st_bytes(const std::string& header, const std::string& data = "") { return le64(header.size()) + header + data; }

// Expects SafetensorsFile(path) to throw a hystack::error whose message names the file and contains `what`.
void expect_bad(const std::string& path, const std::string& what) {
    try {
        SafetensorsFile f(path);
        FAIL("no error for " << path << " (expected '" << what << "')");
    } catch (const hystack::error& e) {
        const std::string msg = e.what();
        INFO(msg);
        CHECK(msg.find(path) != std::string::npos);
        CHECK(msg.find(what) != std::string::npos);
    }
}

void expect_bad_header(const std::string& header, const std::string& data, const std::string& what) {
    TempDir d;
    const auto p = d / "bad.safetensors";
    write_bytes(p, st_bytes(header, data));
    INFO("header: " << header);
    expect_bad(p, what);
}


std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

// Reference half -> double by the definition (sign, exponent, fraction).
double f16_reference(std::uint16_t h) {
    const int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = std::ldexp(double(m), -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = std::ldexp(double(1024 + m), e - 25);
    return s ? -v : v;
}

}  // namespace

TEST_CASE("safetensors: write then read F32 and BF16 tensors with metadata", "[safetensors]") {
    TempDir d;
    const auto p = d / "a.safetensors";
    std::vector<float> a(12), b(5), empty;
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f - 3.0f;
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = 1.0f + float(i) / 3.0f;
    write_safetensors(p, {{"a", {3, 4}, a}, {"b", {5}, b, "BF16"}, {"scalar_empty", {0, 7}, empty}},
                      {{"kind", "test"}, {"note", "x"}});
    SafetensorsFile f(p);
    CHECK(f.path() == p);
    CHECK(f.metadata().size() == 2);
    CHECK(f.metadata().at("kind") == "test");
    REQUIRE(f.tensors().size() == 3);
    CHECK(f.tensors()[0].name == "a");
    CHECK(f.info("a").shape == std::vector<std::size_t>{3, 4});
    CHECK(f.info("a").dtype == "F32");
    CHECK(f.info("b").dtype == "BF16");
    CHECK(f.info("b").nbytes() == 10);
    CHECK(f.info("scalar_empty").numel() == 0);
    CHECK(f.read_float("a") == a);
    const auto rb = f.read_float("b");
    for (std::size_t i = 0; i < b.size(); ++i) CHECK(rb[i] == float(bf16(b[i])));
    CHECK(f.read_float("scalar_empty").empty());
    // in place: the data section is 8-byte aligned by the writer
    const auto va = f.view_f32("a");
    CHECK(std::vector<float>(va.begin(), va.end()) == a);
    const auto vb = f.view_bf16("b");
    REQUIRE(vb.size() == 5);
    CHECK(float(vb[4]) == rb[4]);
    std::vector<float> into(12);
    f.read_into("a", into);
    CHECK(into == a);
    CHECK(f.contains("a"));
    CHECK_FALSE(f.contains("zz"));
    // errors on use
    std::vector<float> small(3);
    CHECK_ERROR("expected a buffer of 12 floats, got 3", f.read_into("a", small));
    CHECK_ERROR("no tensor named 'zz'", f.info("zz"));
    CHECK_ERROR("cannot view it as F32", f.view_f32("b"));
    CHECK_ERROR("cannot view it as BF16", f.view_bf16("a"));
}

TEST_CASE("safetensors: files without metadata or tensors; unknown entry keys are ignored", "[safetensors]") {
    TempDir d;
    write_bytes(d / "empty.safetensors", st_bytes("{}"));
    SafetensorsFile e(d / "empty.safetensors");
    CHECK(e.tensors().empty());
    CHECK(e.metadata().empty());
    write_bytes(d / "nullmeta.safetensors", st_bytes(R"({"__metadata__": null})"));
    CHECK(SafetensorsFile(d / "nullmeta.safetensors").metadata().empty());
    // padded header (trailing spaces) and an extra key with a nested value
    write_bytes(d / "extra.safetensors",
                st_bytes(R"({"x": {"extra": {"a": [1, {"b": null}]}, "dtype": "U8", "shape": [2], "data_offsets": [0, 2], "z": 1.5}}   )",
                         "ab"));
    SafetensorsFile x(d / "extra.safetensors");
    REQUIRE(x.tensors().size() == 1);
    CHECK(x.raw("x").size() == 2);
    CHECK_ERROR("dtype U8 cannot be read as float", x.read_float("x"));
    // zero-sized tensors may share an offset
    write_bytes(d / "zeros.safetensors",
                st_bytes(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "c": {"dtype": "F32", "shape": [3, 0], "data_offsets": [4, 4]}})",
                         std::string(4, '\0')));
    CHECK(SafetensorsFile(d / "zeros.safetensors").tensors().size() == 3);
}

TEST_CASE("safetensors: F16 converts exactly for all 65536 bit patterns", "[safetensors]") {
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const float got = f16_to_float(std::uint16_t(h));
        const double want = f16_reference(std::uint16_t(h));
        if (std::isnan(want)) {
            REQUIRE(std::isnan(got));
            // payload and sign kept: top 10 fraction bits of the float are the half's fraction
            REQUIRE(((bits_of(got) >> 13) & 0x3ffu) == (h & 0x3ffu));
            REQUIRE((bits_of(got) >> 31) == (h >> 15));
        } else {
            REQUIRE(double(got) == want);
            REQUIRE(std::signbit(got) == bool(h >> 15));  // -0 stays -0
        }
    }
    std::vector<float> one(1);
    const std::byte two[2] = {std::byte(0x00), std::byte(0x3c)};
    SafetensorsFile::convert("F16", two, one);
    CHECK(one[0] == 1.0f);
    CHECK_ERROR("convert: 2 bytes of F32 for 1 floats", SafetensorsFile::convert("F32", two, one));
    CHECK_ERROR("convert: dtype I8 cannot be read as float", SafetensorsFile::convert("I8", two, one));
    CHECK(f16_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(f16_to_float(0x7bff) == 65504.0f);               // largest finite
    CHECK(std::isinf(f16_to_float(0xfc00)));

    // through a file, with every bit pattern, and BF16 likewise
    TempDir d;
    std::vector<std::uint16_t> all(65536);
    for (std::uint32_t i = 0; i < 65536; ++i) all[i] = std::uint16_t(i);
    std::vector<std::byte> bytes(2 * 65536);
    for (std::size_t i = 0; i < all.size(); ++i) {
        bytes[2 * i] = std::byte(all[i] & 0xff);
        bytes[2 * i + 1] = std::byte(all[i] >> 8);
    }
    const auto p = d / "h.safetensors";
    write_safetensors_raw(p, {{"h", "F16", {256, 256}, bytes}, {"b", "BF16", {65536}, bytes}});
    SafetensorsFile f(p);
    const auto h = f.read_float("h");
    const auto b = f.read_float("b");
    for (std::size_t i = 0; i < 65536; ++i) {
        REQUIRE(bits_of(h[i]) == bits_of(f16_to_float(std::uint16_t(i))));
        REQUIRE(bits_of(b[i]) == std::uint32_t(i) << 16);
    }
}

TEST_CASE("safetensors: unaligned data is read exactly but not viewed", "[safetensors]") {
    TempDir d;
    // header of odd length: the data section starts at an odd address in the mapping
    std::string header = R"({"f": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}, "b": {"dtype": "BF16", "shape": [5000], "data_offsets": [12, 10012]}})";
    if (header.size() % 2 == 0) header += ' ';
    std::string data(12 + 10000, '\0');
    const float fv[3] = {1.5f, -2.25f, 1e-30f};
    std::memcpy(data.data(), fv, 12);
    for (std::size_t i = 0; i < 5000; ++i) {
        const std::uint16_t v = bf16(float(i % 256) * 0.25f - 7.0f).bits;
        data[12 + 2 * i] = char(v & 0xff);
        data[12 + 2 * i + 1] = char(v >> 8);
    }
    const auto p = d / "u.safetensors";
    write_bytes(p, st_bytes(header, data));
    SafetensorsFile f(p);
    CHECK(f.read_float("f") == std::vector<float>{1.5f, -2.25f, 1e-30f});
    const auto b = f.read_float("b");
    for (std::size_t i = 0; i < 5000; ++i) REQUIRE(b[i] == float(i % 256) * 0.25f - 7.0f);
    CHECK_ERROR("not aligned", f.view_f32("f"));
    CHECK_ERROR("not aligned", f.view_bf16("b"));
}

TEST_CASE("safetensors: from_bytes parses an in-memory file", "[safetensors]") {
    const std::string s = st_bytes(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", std::string("\0\0\x80\x3f", 4));
    std::vector<std::byte> bytes(s.size());
    std::memcpy(bytes.data(), s.data(), s.size());
    auto f = SafetensorsFile::from_bytes(bytes, "mem");
    CHECK(f.read_float("t") == std::vector<float>{1.0f});
    CHECK_ERROR("mem0: truncated", SafetensorsFile::from_bytes({}, "mem0"));
}

TEST_CASE("safetensors: missing, empty, truncated and oversized files", "[safetensors]") {
    TempDir d;
    expect_bad(d / "nope.safetensors", "no such file");
    expect_bad(d.path.string(), "is a directory");
    REQUIRE(::mkfifo((d / "fifo").c_str(), 0600) == 0);
    expect_bad(d / "fifo", "not a regular file");  // must not block waiting for a writer
    write_bytes(d / "empty.safetensors", "");
    expect_bad(d / "empty.safetensors", "truncated");
    write_bytes(d / "short.safetensors", "\x05\0\0");
    expect_bad(d / "short.safetensors", "truncated");
    // header length past the end
    write_bytes(d / "past.safetensors", le64(100) + "{}");
    expect_bad(d / "past.safetensors", "past the end of the file");
    // 2^64 - 1: must not wrap
    write_bytes(d / "huge.safetensors", le64(~0ull) + "{}");
    expect_bad(d / "huge.safetensors", "exceeds the limit");
    // header over 100 MB is refused before anything is read or allocated
    write_bytes(d / "big.safetensors", le64(100'000'001) + "{}");
    expect_bad(d / "big.safetensors", "exceeds the limit of 100000000 bytes");
    // a valid file cut short: its data section no longer matches the offsets
    const std::string good = st_bytes(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", std::string(16, '\1'));
    write_bytes(d / "cut.safetensors", good.substr(0, good.size() - 5));
    expect_bad(d / "cut.safetensors", "out of bounds");
    write_bytes(d / "cuthdr.safetensors", good.substr(0, 20));
    expect_bad(d / "cuthdr.safetensors", "past the end");
}

TEST_CASE("safetensors: malformed JSON headers", "[safetensors]") {
    expect_bad_header("{\"t\": ", "", "invalid JSON");
    expect_bad_header("not json", "", "invalid JSON");
    expect_bad_header("", "", "invalid JSON");
    expect_bad_header("{} {}", "", "invalid JSON");
    expect_bad_header(std::string("{\0}", 3), "", "invalid JSON");
    expect_bad_header("[1, 2]", "", "header is not a JSON object");
    expect_bad_header("42", "", "header is not a JSON object");
    expect_bad_header(R"({"t": 5})", "", "entry 't' is not an object");
    expect_bad_header(R"({"t": [1]})", "", "entry 't' is not an object");
    expect_bad_header(R"({"__metadata__": [1]})", "", "__metadata__ is not an object");
    expect_bad_header(R"({"__metadata__": {"a": 1}})", "", "value of 'a' is not a string");
    expect_bad_header(R"({"__metadata__": {"a": {"b": "c"}}})", "", "value of 'a' is not a string");
    // deep nesting is refused at the first level where it is not allowed, without recursion
    expect_bad_header("{\"t\": {\"dtype\": " + std::string(100000, '[') + std::string(100000, ']') + "}}", "",
                      "dtype is not a string");
}

TEST_CASE("safetensors: bad tensor entries", "[safetensors]") {
    const std::string d16(16, '\0');
    expect_bad_header(R"({"t": {"dtype": "F33", "shape": [4], "data_offsets": [0, 16]}})", d16, "unknown dtype 'F33'");
    expect_bad_header(R"({"t": {"dtype": 4, "shape": [4], "data_offsets": [0, 16]}})", d16, "dtype is not a string");
    expect_bad_header(R"({"t": {"shape": [4], "data_offsets": [0, 16]}})", d16, "missing 'dtype'");
    expect_bad_header(R"({"t": {"dtype": "F32", "data_offsets": [0, 16]}})", d16, "missing 'shape'");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4]}})", d16, "missing 'data_offsets'");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": 4, "data_offsets": [0, 16]}})", d16, "shape is not an array");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})", d16, "not a non-negative integer");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4.0], "data_offsets": [0, 16]}})", d16, "not a non-negative integer");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [[4]], "data_offsets": [0, 16]}})", d16, "not a non-negative integer");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}})", d16, "not a non-negative integer");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0]}})", d16, "must have 2 entries");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16, 32]}})", d16, "more than 2 entries");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, -16]}})", d16, "data_offsets entry is not");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 1e30]}})", d16, "data_offsets entry is not");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": {"a": 0}}})", d16, "data_offsets is not an array");
    expect_bad_header(R"({"t": {"dtype": "F32", "dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", d16,
                      "duplicate key 'dtype'");
}

TEST_CASE("safetensors: duplicate names are refused (JSON objects would keep the last)", "[safetensors]") {
    const std::string d32(32, '\0');
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "t": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})",
                      d32, "duplicate entry 't'");
    expect_bad_header(R"({"__metadata__": {"a": "1"}, "__metadata__": {"b": "2"}})", "", "duplicate entry '__metadata__'");
    expect_bad_header(R"({"__metadata__": {"a": "1", "a": "2"}})", "", "duplicate key 'a'");
}

TEST_CASE("safetensors: data offsets out of bounds, reversed, overlapping, gapped or short", "[safetensors]") {
    const std::string d16(16, '\0'), d32(32, '\0');
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 20]}})", d16, "out of bounds");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})", d16, "out of bounds");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})", d16, "reversed");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4], "data_offsets": [18446744073709551615, 15]}})", d16, "reversed");
    expect_bad_header(
        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}})",
        std::string(24, '\0'), "overlaps tensor 'a'");
    expect_bad_header(
        R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})",
        d16, "overlaps");
    expect_bad_header(
        R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})",
        d32, "gap of 8 bytes before tensor 'b'");
    expect_bad_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})", d16, "gap of 8 bytes");
    expect_bad_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", d16, "8 bytes after the last tensor");
    expect_bad_header("{}", d16, "16 bytes after the last tensor");
}

TEST_CASE("safetensors: shape x dtype size must equal the byte length, without overflow", "[safetensors]") {
    const std::string d16(16, '\0');
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", d16, "= 12 bytes, but data_offsets [0, 16] hold 16");
    expect_bad_header(R"({"t": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 16]}})", d16, "hold 16");
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [], "data_offsets": [0, 16]}})", d16, "hold 16");
    // products that wrap to the right byte count must still be refused
    expect_bad_header(R"({"t": {"dtype": "F32", "shape": [4611686018427387908], "data_offsets": [0, 16]}})", d16, "overflows");
    expect_bad_header(R"({"t": {"dtype": "U8", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 16]}})", d16, "overflows");
    // a huge dimension times 0 is a valid empty tensor
    TempDir d;
    write_bytes(d / "z.safetensors", st_bytes(R"({"t": {"dtype": "F32", "shape": [18446744073709551615, 0], "data_offsets": [0, 0]}})"));
    CHECK(SafetensorsFile(d / "z.safetensors").info("t").numel() == 0);
}

TEST_CASE("safetensors: every golden file parses and reads", "[safetensors]") {
    std::size_t files = 0;
    for (const auto& e : fs::recursive_directory_iterator(fs::path(HYSTACK_TEST_DATA) / "golden")) {
        if (e.path().extension() != ".safetensors") continue;
        SafetensorsFile f(e.path().string());
        for (const auto& t : f.tensors()) CHECK(f.read_float(t.name).size() == t.numel());
        ++files;
    }
    CHECK(files >= 10);
}

TEST_CASE("safetensors: writer refuses inconsistent input", "[safetensors]") {
    TempDir d;
    const auto p = d / "w.safetensors";
    std::vector<float> v(6, 1.0f);
    CHECK_ERROR("needs 4 values, got 6", write_safetensors(p, {{"a", {2, 2}, v}}));
    CHECK_ERROR("duplicate tensor name 'a'", write_safetensors(p, {{"a", {6}, v}, {"a", {6}, v}}));
    CHECK_ERROR("cannot write dtype 'F16'", write_safetensors(p, {{"a", {6}, v, "F16"}}));
    CHECK_ERROR("cannot write a tensor named", write_safetensors(p, {{"__metadata__", {6}, v}}));
    std::vector<std::byte> raw(5);
    CHECK_ERROR("needs 8 bytes, got 5", write_safetensors_raw(p, {{"r", "I32", {2}, raw}}));
    CHECK_ERROR("unknown dtype 'Q4'", write_safetensors_raw(p, {{"r", "Q4", {5}, raw}}));
    CHECK_FALSE(fs::exists(p));
    CHECK_ERROR("cannot create file", write_safetensors(d / "no/such/dir/x.safetensors", {{"a", {6}, v}}));
    // BF16 rounds to nearest even; special values survive
    const std::vector<float> s = {1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f, INFINITY, -0.0f, 3e38f};
    write_safetensors(p, {{"s", {5}, s, "BF16"}});
    const auto r = SafetensorsFile(p).read_float("s");
    CHECK(r[0] == 1.0f);
    CHECK(r[1] == 1.0f + 4.0f / 256.0f);
    CHECK(std::isinf(r[2]));
    CHECK(std::signbit(r[3]));
    CHECK(r[4] == float(bf16(3e38f)));
}

namespace {
// A small two-shard checkpoint: a, b in shard 1; c in shard 2.
void write_sharded(const TempDir& d, const std::string& index_json) {
    const std::vector<float> a = {1, 2}, b = {3}, c = {4, 5, 6};
    write_safetensors(d / "model-00001-of-00002.safetensors", {{"a", {2}, a}, {"b", {1}, b}});
    write_safetensors(d / "model-00002-of-00002.safetensors", {{"c", {3}, c, "BF16"}});
    write_bytes(d / "model.safetensors.index.json", index_json);
}
const char* good_index = R"({"metadata": {"total_size": 24}, "weight_map": {
  "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})";

void expect_bad_ckpt(const std::string& dir, const std::string& what) {
    try {
        (void)Checkpoint::open(dir);
        FAIL("no error (expected '" << what << "')");
    } catch (const hystack::error& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find(what) != std::string::npos);
    }
}
}  // namespace

TEST_CASE("safetensors: checkpoints from one file or shards", "[safetensors]") {
    {
        TempDir d;
        const std::vector<float> a = {1, 2, 3};
        write_safetensors(d / "model.safetensors", {{"a", {3}, a}}, {{"format", "pt"}});
        for (const auto& path : {d.path.string(), d / "model.safetensors"}) {
            auto c = Checkpoint::open(path);
            CHECK(c.names() == std::vector<std::string>{"a"});
            CHECK(c.info("a").shape == std::vector<std::size_t>{3});
            CHECK(c.read_float("a") == a);
            CHECK(c.metadata().at("format") == "pt");
        }
    }
    {
        TempDir d;
        write_sharded(d, good_index);
        auto c = Checkpoint::open(d.path.string());
        CHECK(c.names().size() == 3);
        CHECK(c.files().size() == 2);
        std::vector<float> out(3);
        c.read_into("c", out);
        CHECK(out == std::vector<float>{4, 5, 6});
        CHECK(c.read_float("a") == std::vector<float>{1, 2});
        CHECK(c.metadata().at("total_size") == "24");
        CHECK_ERROR("no tensor named 'zz'", c.info("zz"));
    }
}

TEST_CASE("safetensors: bad checkpoints and shard indexes", "[safetensors]") {
    {
        TempDir d;
        expect_bad_ckpt(d.path.string(), "neither model.safetensors nor model.safetensors.index.json");
        expect_bad_ckpt(d / "missing", "no such checkpoint");
    }
    const auto with_index = [](const std::string& index, const std::string& what) {
        TempDir d;
        write_sharded(d, index);
        INFO(index);
        expect_bad_ckpt(d.path.string(), what);
    };
    with_index("{", "invalid JSON");
    with_index("[]", "not a JSON object");
    with_index(R"({"metadata": {}})", "missing object 'weight_map'");
    with_index(R"({"weight_map": {"a": 1}})", "is not a string");
    with_index(R"({"weight_map": {"a": "../x.safetensors"}})", "is not a file name in the checkpoint directory");
    with_index(R"({"weight_map": {"a": "/etc/passwd"}})", "is not a file name");
    with_index(R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "a": "model-00002-of-00002.safetensors"}})",
               "duplicate key 'a'");
    with_index(R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})",
               "but weight_map names model-00002-of-00002.safetensors");
    with_index(R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})",
               "tensor 'b' of");
    with_index(R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"}})",
               "tensor 'd' listed in weight_map is missing");
    with_index(R"({"weight_map": {"a": "model-00003-of-00002.safetensors"}})", "no such file");
}
