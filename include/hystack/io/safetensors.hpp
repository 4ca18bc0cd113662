#pragma once
#include "../core/module.hpp"

// safetensors (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
// N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data section, tensors packed back to back (offsets relative to its start).
//
// Everything read from a file is untrusted: every malformed file gets a hystack::error naming the
// file and the problem (never a crash, hang or allocation sized by the file's claims). The header is
// parsed with a SAX handler that builds only the tensor table (memory proportional to the header,
// which is capped at 100 MB) and catches duplicate names, which a JSON DOM would silently merge.
// The data section must be covered exactly: no gaps, overlaps, out-of-range or trailing bytes.
//
// Files are memory-mapped where POSIX mmap exists: the header is parsed from the mapping, raw() and
// view_f32/view_bf16 give in-place views. read_into/read_float copy with pread(2) instead (straight
// into the destination for F32, through a small cache-resident buffer for BF16/F16): a page-cache
// copy runs 3-5x faster than faulting the mapping in 4 KB pages, and a file truncated while open
// reads short (an error) rather than faulting. Views of a mapped file that another process
// truncates can still fault (SIGBUS): that is the price of mapping. Without mmap the whole file is
// read into memory.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#define HYSTACK_IO_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include "../core/bf16.hpp"
#include "../core/error.hpp"

namespace hystack::io {

/// Largest header accepted (the reference implementation's limit).
inline constexpr std::uint64_t max_header_bytes = 100u * 1000u * 1000u;

/// Bytes per element of a safetensors dtype name; 0 for an unknown name.
inline std::size_t dtype_size(std::string_view dtype) {
    static constexpr std::pair<std::string_view, std::size_t> table[] = {
        {"F64", 8}, {"F32", 4},  {"F16", 2},  {"BF16", 2}, {"I64", 8},     {"I32", 4},      {"I16", 2},
        {"I8", 1},  {"U64", 8},  {"U32", 4},  {"U16", 2},  {"U8", 1},      {"BOOL", 1},     {"F8_E5M2", 1},
        {"F8_E4M3", 1}};
    for (const auto& [name, size] : table)
        if (name == dtype) return size;
    return 0;
}

/// True for the dtypes read_into converts to float exactly: F32, BF16, F16.
inline bool dtype_readable_as_float(std::string_view dtype) {
    return dtype == "F32" || dtype == "BF16" || dtype == "F16";
}

/// Exact IEEE half -> float (subnormals, infinities and NaN payloads included).
inline float f16_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    const std::uint32_t mant = h & 0x3ffu;
    std::uint32_t bits;
    if (exp == 0) {
        // subnormal or zero: mant * 2^-24, exact in float (a normal float for every mant > 0)
        const float v = float(mant) * 0x1p-24f;
        std::memcpy(&bits, &v, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);  // inf (mant 0) or NaN with its payload
    } else {
        bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

/// "[3, 4]"
inline std::string shape_string(const std::vector<std::size_t>& shape) {
    std::string s = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

/// Element count of `shape`, or nullopt when the product overflows 64 bits.
inline std::optional<std::uint64_t> checked_numel(const std::vector<std::size_t>& shape) {
    std::uint64_t n = 1;
    for (auto d : shape) {
        if (d != 0 && n > UINT64_MAX / d) return std::nullopt;
        n *= d;
    }
    return n;
}

/// One tensor of a file: dtype name, shape and byte range [begin, end) within the data section.
struct TensorInfo {
    std::string name;
    std::string dtype;
    std::vector<std::size_t> shape;
    std::uint64_t begin = 0, end = 0;  // byte offsets into the data section

    std::size_t numel() const { return std::size_t(checked_numel(shape).value_or(0)); }
    std::uint64_t nbytes() const { return end - begin; }
};

namespace detail {

// A read-only byte range backed by a mapping or an owned buffer.
class Storage {
public:
    Storage() = default;
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    ~Storage() {
#if HYSTACK_IO_MMAP
        if (map_) ::munmap(map_, size_);
        if (fd_ >= 0) ::close(fd_);
#endif
    }

    static std::unique_ptr<Storage> from_buffer(std::vector<std::byte> bytes) {
        auto s = std::make_unique<Storage>();
        s->owned_ = std::move(bytes);
        s->data_ = s->owned_.data();
        s->size_ = s->owned_.size();
        return s;
    }

    static std::unique_ptr<Storage> open(const std::string& path) {
        std::error_code ec;
        const auto st = std::filesystem::status(path, ec);
        check(!ec && std::filesystem::exists(st), path, ": cannot open file (no such file)");
        check(!std::filesystem::is_directory(st), path, ": cannot open file (is a directory)");
        // checked before open(2): opening a FIFO for reading would block until a writer appears
        check(std::filesystem::is_regular_file(st), path, ": not a regular file");
#if HYSTACK_IO_MMAP
        auto s = std::make_unique<Storage>();
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        check(fd >= 0, path, ": cannot open file (", std::strerror(errno), ")");
        struct stat sb {};
        if (::fstat(fd, &sb) != 0) {
            const int e = errno;
            ::close(fd);
            fail(path, ": cannot stat file (", std::strerror(e), ")");
        }
        if (!S_ISREG(sb.st_mode)) {
            ::close(fd);
            fail(path, ": not a regular file");
        }
        s->size_ = std::size_t(sb.st_size);
        if (s->size_ > 0) {
            void* p = ::mmap(nullptr, s->size_, PROT_READ, MAP_PRIVATE, fd, 0);
            if (p == MAP_FAILED) {
                const int e = errno;
                ::close(fd);
                fail(path, ": cannot map file (", std::strerror(e), ")");
            }
            s->map_ = p;
            s->data_ = static_cast<const std::byte*>(p);
        }
        s->fd_ = fd;  // kept for read_at
        s->path_ = path;
        return s;
#else
        std::ifstream in(path, std::ios::binary | std::ios::ate);
        check(bool(in), path, ": cannot open file");
        const auto n = in.tellg();
        check(n >= 0, path, ": cannot determine the file size");
        std::vector<std::byte> bytes(static_cast<std::size_t>(n));
        in.seekg(0);
        in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(bytes.size()));
        check(bool(in), path, ": read error");
        return from_buffer(std::move(bytes));
#endif
    }

    const std::byte* data() const { return data_; }
    std::size_t size() const { return size_; }

    /// Copies bytes [off, off + n) into dst. With a file descriptor this is pread(2): a copy from the
    /// page cache without faulting the mapping in page by page (about twice as fast for whole
    /// tensors), and a file truncated behind our back reads short (an error) instead of SIGBUS.
    void read_at(std::uint64_t off, void* dst, std::size_t n) const {
#if HYSTACK_IO_MMAP
        if (fd_ >= 0) {
            auto* out = static_cast<char*>(dst);
            while (n > 0) {
                const std::size_t chunk = std::min<std::size_t>(n, std::size_t(1) << 30);
                const ssize_t r = ::pread(fd_, out, chunk, off_t(off));
                if (r < 0 && errno == EINTR) continue;
                check(r > 0, path_, ": read error at byte ", off, " (", r < 0 ? std::strerror(errno) : "file shrank", ")");
                out += r;
                off += std::uint64_t(r);
                n -= std::size_t(r);
            }
            return;
        }
#endif
        if (n) std::memcpy(dst, data_ + off, n);
    }

private:
    void* map_ = nullptr;
    int fd_ = -1;
    std::string path_;
    std::vector<std::byte> owned_;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
};

// SAX handler for the header: builds the tensor table and metadata, rejecting anything else.
// Returning false stops the parser; `error` then says why.
class HeaderSax {
public:
    using json = nlohmann::json;
    std::vector<TensorInfo> tensors;
    std::map<std::string, std::string> metadata;
    std::string error;

    bool null() {
        if (skip_) return true;
        if (st_ == St::top_value && cur_ == "__metadata__") return after_top_value(), true;  // "__metadata__": null
        return bad_value("null");
    }
    bool boolean(bool) { return skip_ ? true : bad_value("a boolean"); }
    bool number_integer(json::number_integer_t v) {
        if (skip_) return true;
        if (v >= 0) return number_unsigned(json::number_unsigned_t(v));
        return bad_value("a negative number");
    }
    bool number_unsigned(json::number_unsigned_t v) {
        if (skip_) return true;
        if (st_ == St::shape) {
            if constexpr (sizeof(std::size_t) < sizeof(v))
                if (v > std::numeric_limits<std::size_t>::max()) return bad("shape dimension ", v, " too large");
            tensors.back().shape.push_back(std::size_t(v));
            return true;
        }
        if (st_ == St::offsets) {
            if (n_offsets_ >= 2) return bad("data_offsets of '", tensors.back().name, "' has more than 2 entries");
            (n_offsets_ == 0 ? tensors.back().begin : tensors.back().end) = v;
            ++n_offsets_;
            return true;
        }
        return bad_value("a number");
    }
    bool number_float(json::number_float_t, const std::string& s) {
        return skip_ ? true : bad_value("the non-integer number " + s);
    }
    bool binary(json::binary_t&) { return skip_ ? true : bad_value("binary data"); }
    bool string(std::string& s) {
        if (skip_) return true;
        if (st_ == St::meta) {
            metadata.emplace(cur_meta_, std::move(s));
            return true;
        }
        if (st_ == St::entry && field_ == Field::dtype) {
            if (dtype_size(s) == 0) return bad("tensor '", tensors.back().name, "': unknown dtype '", s, "'");
            tensors.back().dtype = std::move(s);
            seen_ |= 1;
            return true;
        }
        return bad_value("a string");
    }
    bool start_object(std::size_t) {
        if (skip_) return ++skip_, true;
        switch (st_) {
            case St::start: st_ = St::top; return true;
            case St::top_value:
                if (cur_ == "__metadata__") {
                    st_ = St::meta;
                    return true;
                }
                tensors.push_back(TensorInfo{cur_, {}, {}, 0, 0});
                st_ = St::entry;
                seen_ = 0;
                field_ = Field::none;
                entry_keys_.clear();
                return true;
            case St::entry:
                if (field_ == Field::other) return ++skip_, true;
                return bad_value("an object");
            default: return bad_value("an object");
        }
    }
    bool end_object() {
        if (skip_) return --skip_, after_skipped(), true;
        switch (st_) {
            case St::top: st_ = St::done; return true;
            case St::meta: after_top_value(); return true;
            case St::entry: {
                const auto& t = tensors.back();
                if (!(seen_ & 1)) return bad("tensor '", t.name, "': missing 'dtype'");
                if (!(seen_ & 2)) return bad("tensor '", t.name, "': missing 'shape'");
                if (!(seen_ & 4)) return bad("tensor '", t.name, "': missing 'data_offsets'");
                after_top_value();
                return true;
            }
            default: return bad("unexpected end of object");
        }
    }
    bool start_array(std::size_t) {
        if (skip_) return ++skip_, true;
        if (st_ == St::entry && field_ == Field::shape) {
            st_ = St::shape;
            tensors.back().shape.clear();
            return true;
        }
        if (st_ == St::entry && field_ == Field::offsets) {
            st_ = St::offsets;
            n_offsets_ = 0;
            return true;
        }
        if (st_ == St::entry && field_ == Field::other) return ++skip_, true;
        return bad_value("an array");
    }
    bool end_array() {
        if (skip_) return --skip_, after_skipped(), true;
        if (st_ == St::shape) {
            seen_ |= 2;
            st_ = St::entry;
            return true;
        }
        if (st_ == St::offsets) {
            if (n_offsets_ != 2) return bad("data_offsets of '", tensors.back().name, "' must have 2 entries");
            seen_ |= 4;
            st_ = St::entry;
            return true;
        }
        return bad("unexpected end of array");
    }
    bool key(std::string& k) {
        if (skip_) return true;
        switch (st_) {
            case St::top:
                if (!top_keys_.insert(k).second) return bad("duplicate entry '", k, "'");
                cur_ = std::move(k);
                st_ = St::top_value;
                return true;
            case St::meta:
                if (metadata.count(k)) return bad("__metadata__: duplicate key '", k, "'");
                cur_meta_ = std::move(k);
                return true;
            case St::entry:
                if (!entry_keys_.insert(k).second)
                    return bad("tensor '", tensors.back().name, "': duplicate key '", k, "'");
                field_ = k == "dtype" ? Field::dtype
                         : k == "shape" ? Field::shape
                         : k == "data_offsets" ? Field::offsets
                                               : Field::other;  // unknown keys are ignored, like the reference reader
                return true;
            default: return bad("unexpected key '", k, "'");
        }
    }
    bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) {
        if (error.empty()) error = std::string("invalid JSON header (at byte ") + std::to_string(pos) + "): " + ex.what();
        return false;
    }
    bool finished() const { return st_ == St::done; }

private:
    enum class St { start, top, top_value, meta, entry, shape, offsets, done };
    enum class Field { none, dtype, shape, offsets, other };

    template <class... P>
    bool bad(const P&... parts) {
        if (error.empty()) {
            std::ostringstream os;
            hystack::detail::append_all(os, parts...);
            error = os.str();
        }
        return false;
    }
    bool bad_value(const std::string& what) {
        if (st_ == St::entry && field_ == Field::other) {  // a scalar under an ignored key
            after_skipped();
            return true;
        }
        switch (st_) {
            case St::start: return bad("header is not a JSON object (found ", what, ")");
            case St::top_value:
                if (cur_ == "__metadata__") return bad("__metadata__ is not an object (found ", what, ")");
                return bad("entry '", cur_, "' is not an object (found ", what, ")");
            case St::meta: return bad("__metadata__: value of '", cur_meta_, "' is not a string (found ", what, ")");
            case St::entry: {
                const auto& n = tensors.back().name;
                if (field_ == Field::dtype) return bad("tensor '", n, "': dtype is not a string (found ", what, ")");
                if (field_ == Field::shape) return bad("tensor '", n, "': shape is not an array (found ", what, ")");
                return bad("tensor '", n, "': data_offsets is not an array (found ", what, ")");
            }
            case St::shape:
                return bad("tensor '", tensors.back().name, "': shape entry is not a non-negative integer (found ",
                           what, ")");
            case St::offsets:
                return bad("tensor '", tensors.back().name,
                           "': data_offsets entry is not a non-negative integer (found ", what, ")");
            default: return bad("unexpected ", what);
        }
    }
    void after_top_value() { st_ = St::top; }
    void after_skipped() {
        if (skip_ == 0) field_ = Field::none;
    }

    St st_ = St::start;
    Field field_ = Field::none;
    std::string cur_, cur_meta_;
    std::unordered_set<std::string> top_keys_, entry_keys_;
    unsigned seen_ = 0;
    int n_offsets_ = 0;
    std::size_t skip_ = 0;
};

// Parsed header + validation of the tensor table against a data section of `data_size` bytes.
struct Header {
    std::map<std::string, std::string> metadata;
    std::vector<TensorInfo> tensors;
    std::uint64_t data_offset = 0;  // where the data section starts in the file
};

inline Header parse_header(const std::byte* bytes, std::size_t size, const std::string& path) {
    check(size >= 8, path, ": truncated file (", size, " bytes; a safetensors file has at least 8)");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::uint64_t(std::uint8_t(bytes[i]));
    check(n <= max_header_bytes, path, ": header length ", n, " exceeds the limit of ", max_header_bytes, " bytes");
    check(n <= size - 8, path, ": header length ", n, " past the end of the file (", size - 8,
          " bytes after the length field)");
    HeaderSax sax;
    const char* first = reinterpret_cast<const char*>(bytes + 8);
    bool ok = false;
    try {
        ok = nlohmann::json::sax_parse(first, first + n, &sax, nlohmann::json::input_format_t::json, true, false);
    } catch (const std::exception& e) {  // nlohmann reports some errors by throwing even in SAX mode
        if (sax.error.empty()) sax.error = std::string("invalid JSON header: ") + e.what();
        ok = false;
    }
    if (!ok || !sax.finished()) fail(path, ": ", sax.error.empty() ? "invalid JSON header" : sax.error);

    Header h;
    h.metadata = std::move(sax.metadata);
    h.tensors = std::move(sax.tensors);
    h.data_offset = 8 + n;
    const std::uint64_t data_size = size - 8 - n;

    for (const auto& t : h.tensors) {
        check(t.begin <= t.end, path, ": tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end, "] reversed");
        check(t.end <= data_size, path, ": tensor '", t.name, "': data_offsets [", t.begin, ", ", t.end,
              "] out of bounds (data section is ", data_size, " bytes)");
        const auto numel = checked_numel(t.shape);
        const std::uint64_t esize = dtype_size(t.dtype);
        check(numel.has_value() && *numel <= UINT64_MAX / esize, path, ": tensor '", t.name, "': shape ",
              shape_string(t.shape), " overflows");
        check(*numel * esize == t.end - t.begin, path, ": tensor '", t.name, "': shape ", shape_string(t.shape),
              " x ", t.dtype, " (", esize, " bytes) = ", *numel * esize, " bytes, but data_offsets [", t.begin, ", ",
              t.end, "] hold ", t.end - t.begin);
    }
    // The tensors must tile the data section exactly: sorted by offset, each starts where the last ended.
    std::vector<const TensorInfo*> order;
    order.reserve(h.tensors.size());
    for (const auto& t : h.tensors) order.push_back(&t);
    std::sort(order.begin(), order.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return std::pair(a->begin, a->end) < std::pair(b->begin, b->end); });
    std::uint64_t pos = 0;
    const TensorInfo* prev = nullptr;
    for (const auto* t : order) {
        if (t->begin > pos)
            fail(path, ": gap of ", t->begin - pos, " bytes before tensor '", t->name, "' (data_offsets [", t->begin,
                 ", ", t->end, "])");
        if (t->begin < pos)
            fail(path, ": tensor '", t->name, "' (data_offsets [", t->begin, ", ", t->end, "]) overlaps tensor '",
                 prev->name, "' (data_offsets [", prev->begin, ", ", prev->end, "])");
        pos = t->end;
        if (t->end > t->begin) prev = t;
    }
    check(pos == data_size, path, ": ", data_size - pos, " bytes after the last tensor (data section is ", data_size,
          " bytes, tensors cover ", pos, ")");
    return h;
}

}  // namespace detail

/// A safetensors file, opened and validated (see the file comment). Read-only; reads are const
/// and may run concurrently.
class SafetensorsFile {
public:
    /// Opens and validates `path`; throws hystack::error naming the file and the problem.
    explicit SafetensorsFile(const std::string& path) : path_(path), storage_(detail::Storage::open(path)) { init(); }

    /// Parses an in-memory file; `name` stands for the path in messages.
    static SafetensorsFile from_bytes(std::vector<std::byte> bytes, const std::string& name = "<memory>") {
        return SafetensorsFile(name, detail::Storage::from_buffer(std::move(bytes)));
    }

    const std::string& path() const { return path_; }
    /// The "__metadata__" entries.
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    /// Every tensor, in header order.
    const std::vector<TensorInfo>& tensors() const { return tensors_; }
    bool contains(const std::string& name) const { return index_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const {
        auto it = index_.find(name);
        if (it == index_.end()) fail(path_, ": no tensor named '", name, "'");
        return tensors_[it->second];
    }

    /// The tensor's raw little-endian bytes (a view of the mapping).
    std::span<const std::byte> raw(const std::string& name) const { return raw(info(name)); }
    std::span<const std::byte> raw(const TensorInfo& t) const {
        return {storage_->data() + data_offset_ + t.begin, std::size_t(t.nbytes())};
    }

    /// dst[i] = float(tensor[i]) for an F32, BF16 or F16 tensor (exact); dst.size() must equal numel.
    void read_into(const std::string& name, std::span<float> dst) const { read_into(info(name), dst); }
    void read_into(const TensorInfo& t, std::span<float> dst) const {
        check(dtype_readable_as_float(t.dtype), path_, ": tensor '", t.name, "': dtype ", t.dtype,
              " cannot be read as float (F32, BF16 and F16 can)");
        check(dst.size() == t.numel(), path_, ": tensor '", t.name, "': expected a buffer of ", t.numel(),
              " floats, got ", dst.size());
        const std::uint64_t off = data_offset_ + t.begin;
        if (t.dtype == "F32") {
            storage_->read_at(off, dst.data(), dst.size() * 4);  // straight into the destination
            if constexpr (std::endian::native != std::endian::little)
                for (auto& f : dst) f = std::bit_cast<float>(byteswap32(std::bit_cast<std::uint32_t>(f)));
            return;
        }
        // 16-bit types: through a small buffer that stays in L1/L2 between the read and the conversion
        constexpr std::size_t chunk = 16384;
        std::vector<std::uint16_t> buf(std::min<std::size_t>(chunk, dst.size()));
        for (std::size_t i = 0; i < dst.size(); i += chunk) {
            const std::size_t n = std::min(chunk, dst.size() - i);
            storage_->read_at(off + 2 * i, buf.data(), 2 * n);
            convert(t.dtype, std::as_bytes(std::span<const std::uint16_t>(buf.data(), n)), dst.subspan(i, n));
        }
    }
    std::vector<float> read_float(const std::string& name) const {
        const auto& t = info(name);
        check(dtype_readable_as_float(t.dtype), path_, ": tensor '", name, "': dtype ", t.dtype,
              " cannot be read as float (F32, BF16 and F16 can)");
        std::vector<float> out(t.numel());
        read_into(t, out);
        return out;
    }

    /// The F32 tensor in place (no copy). Throws when the dtype differs or the data is not 4-byte
    /// aligned in memory (a header length that is not a multiple of 4): use read_into then.
    std::span<const float> view_f32(const std::string& name) const { return view<float>(name, "F32"); }
    /// The BF16 tensor in place (no copy); see view_f32.
    std::span<const bf16> view_bf16(const std::string& name) const { return view<bf16>(name, "BF16"); }

    /// Converts little-endian `src` of `dtype` (F32, BF16, F16) to floats; dst.size() * dtype size == src.size().
    static void convert(std::string_view dtype, std::span<const std::byte> src, std::span<float> dst) {
        check(dtype_readable_as_float(dtype), "convert: dtype ", dtype, " cannot be read as float");
        check(src.size() == dst.size() * dtype_size(dtype), "convert: ", src.size(), " bytes of ", dtype, " for ",
              dst.size(), " floats");
        constexpr bool le = std::endian::native == std::endian::little;
        if (dtype == "F32") {
            if (!dst.empty()) std::memcpy(dst.data(), src.data(), dst.size() * 4);
            if constexpr (!le)
                for (auto& f : dst) f = std::bit_cast<float>(byteswap32(std::bit_cast<std::uint32_t>(f)));
        } else if (dtype == "BF16") {
            // bf16 -> f32 is a 16-bit shift; this loop vectorises (exact, NaN payloads kept)
            const std::byte* p = src.data();
            float* d = dst.data();
            if (le && reinterpret_cast<std::uintptr_t>(p) % 2 == 0) {
                const auto* h = reinterpret_cast<const std::uint16_t*>(p);
                for (std::size_t i = 0; i < dst.size(); ++i) d[i] = std::bit_cast<float>(std::uint32_t(h[i]) << 16);
            } else {
                for (std::size_t i = 0; i < dst.size(); ++i)
                    d[i] = std::bit_cast<float>(std::uint32_t(load_u16(p + 2 * i)) << 16);
            }
        } else {  // F16
            for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = f16_to_float(load_u16(src.data() + 2 * i));
        }
    }

private:
    SafetensorsFile(std::string name, std::unique_ptr<detail::Storage> s) : path_(std::move(name)), storage_(std::move(s)) {
        init();
    }
    void init() {
        auto h = detail::parse_header(storage_->data(), storage_->size(), path_);
        metadata_ = std::move(h.metadata);
        tensors_ = std::move(h.tensors);
        data_offset_ = h.data_offset;
        index_.reserve(tensors_.size());
        for (std::size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
    }
    template <class T>
    std::span<const T> view(const std::string& name, std::string_view dtype) const {
        static_assert(std::endian::native == std::endian::little || sizeof(T) == 1);
        const auto& t = info(name);
        check(t.dtype == dtype, path_, ": tensor '", name, "': dtype ", t.dtype, ", cannot view it as ", dtype);
        const auto r = raw(t);
        check(reinterpret_cast<std::uintptr_t>(r.data()) % alignof(T) == 0, path_, ": tensor '", name,
              "' is not aligned for an in-place view; use read_into");
        return {reinterpret_cast<const T*>(r.data()), t.numel()};
    }
    static std::uint16_t load_u16(const std::byte* p) {
        return std::uint16_t(std::uint16_t(std::uint8_t(p[0])) | (std::uint16_t(std::uint8_t(p[1])) << 8));
    }
    static std::uint32_t byteswap32(std::uint32_t v) {
        return (v >> 24) | ((v >> 8) & 0xff00u) | ((v << 8) & 0xff0000u) | (v << 24);
    }

    std::string path_;
    std::unique_ptr<detail::Storage> storage_;
    std::uint64_t data_offset_ = 0;
    std::map<std::string, std::string> metadata_;
    std::vector<TensorInfo> tensors_;
    std::unordered_map<std::string, std::size_t> index_;
};

// ---------------------------------------------------------------------------------------------
// Writing

/// A tensor to write from float values: stored as `dtype` "F32" (exact) or "BF16" (round to nearest even).
struct TensorData {
    std::string name;
    std::vector<std::size_t> shape;
    std::span<const float> data;  // product(shape) floats, row-major
    std::string dtype = "F32";
};

/// A tensor to write from raw little-endian bytes of any safetensors dtype.
struct RawTensor {
    std::string name;
    std::string dtype;
    std::vector<std::size_t> shape;
    std::span<const std::byte> bytes;  // product(shape) * dtype_size(dtype) bytes
};

namespace detail {

struct WriteEntry {
    std::string name, dtype;
    std::vector<std::size_t> shape;
    std::uint64_t nbytes;
};

// Writes header + data (produced by `emit(i, out)` per tensor) to `path` via a temporary file renamed
// into place, so a failed write never leaves a half-written file under the final name.
template <class Emit>
void write_file(const std::string& path, const std::vector<WriteEntry>& entries,
                const std::map<std::string, std::string>& metadata, Emit&& emit) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::unordered_set<std::string> names;
    std::uint64_t off = 0;
    for (const auto& e : entries) {
        check(!e.name.empty() && e.name != "__metadata__", path, ": cannot write a tensor named '", e.name, "'");
        check(names.insert(e.name).second, path, ": duplicate tensor name '", e.name, "'");
        header[e.name] = {{"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {off, off + e.nbytes}}};
        off += e.nbytes;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');  // pad so the data section is 8-byte aligned
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        check(bool(out), path, ": cannot create file ", tmp);
        unsigned char len[8];
        for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(std::uint64_t(text.size()) >> (8 * i));
        out.write(reinterpret_cast<const char*>(len), 8);
        out.write(text.data(), std::streamsize(text.size()));
        for (std::size_t i = 0; i < entries.size(); ++i) emit(i, out);
        out.flush();
        if (!out) {
            out.close();
            std::remove(tmp.c_str());
            fail(path, ": write error");
        }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) {
        std::remove(tmp.c_str());
        fail(path, ": cannot rename ", tmp, " into place (", ec.message(), ")");
    }
}

}  // namespace detail

/// Writes `tensors` (float data stored as F32 or BF16) and string metadata as a safetensors file.
inline void write_safetensors(const std::string& path, std::span<const TensorData> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    std::vector<detail::WriteEntry> entries;
    for (const auto& t : tensors) {
        check(t.dtype == "F32" || t.dtype == "BF16", path, ": tensor '", t.name, "': cannot write dtype '", t.dtype,
              "' from floats (F32 or BF16)");
        const auto n = checked_numel(t.shape);
        check(n && *n == t.data.size(), path, ": tensor '", t.name, "': shape ", shape_string(t.shape), " needs ",
              n.value_or(0), " values, got ", t.data.size());
        entries.push_back({t.name, t.dtype, t.shape, *n * dtype_size(t.dtype)});
    }
    detail::write_file(path, entries, metadata, [&](std::size_t i, std::ofstream& out) {
        const auto& t = tensors[i];
        if (t.dtype == "F32") {
            if constexpr (std::endian::native == std::endian::little) {
                out.write(reinterpret_cast<const char*>(t.data.data()), std::streamsize(t.data.size() * 4));
            } else {
                for (float f : t.data) {
                    const auto u = std::bit_cast<std::uint32_t>(f);
                    const char b[4] = {char(u), char(u >> 8), char(u >> 16), char(u >> 24)};
                    out.write(b, 4);
                }
            }
            return;
        }
        bf16 tmp[4096];
        unsigned char bytes[2 * 4096];
        for (std::size_t b = 0; b < t.data.size(); b += 4096) {
            const std::size_t n = std::min<std::size_t>(4096, t.data.size() - b);
            narrow(t.data.subspan(b, n), std::span<bf16>(tmp, n));
            for (std::size_t j = 0; j < n; ++j) {
                bytes[2 * j] = static_cast<unsigned char>(tmp[j].bits);
                bytes[2 * j + 1] = static_cast<unsigned char>(tmp[j].bits >> 8);
            }
            out.write(reinterpret_cast<const char*>(bytes), std::streamsize(2 * n));
        }
    });
}
inline void write_safetensors(const std::string& path, std::initializer_list<TensorData> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    write_safetensors(path, std::span<const TensorData>(tensors.begin(), tensors.size()), metadata);
}
inline void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
    write_safetensors(path, std::span<const TensorData>(tensors), metadata);
}

/// Writes tensors given as raw bytes of any dtype (sizes checked) and string metadata.
inline void write_safetensors_raw(const std::string& path, std::span<const RawTensor> tensors,
                                  const std::map<std::string, std::string>& metadata = {}) {
    std::vector<detail::WriteEntry> entries;
    for (const auto& t : tensors) {
        const std::size_t es = dtype_size(t.dtype);
        check(es != 0, path, ": tensor '", t.name, "': unknown dtype '", t.dtype, "'");
        const auto n = checked_numel(t.shape);
        check(n && *n <= UINT64_MAX / es && *n * es == t.bytes.size(), path, ": tensor '", t.name, "': shape ",
              shape_string(t.shape), " x ", t.dtype, " needs ", n.value_or(0) * es, " bytes, got ", t.bytes.size());
        entries.push_back({t.name, t.dtype, t.shape, t.bytes.size()});
    }
    detail::write_file(path, entries, metadata, [&](std::size_t i, std::ofstream& out) {
        out.write(reinterpret_cast<const char*>(tensors[i].bytes.data()), std::streamsize(tensors[i].bytes.size()));
    });
}
inline void write_safetensors_raw(const std::string& path, const std::vector<RawTensor>& tensors,
                                  const std::map<std::string, std::string>& metadata = {}) {
    write_safetensors_raw(path, std::span<const RawTensor>(tensors), metadata);
}

// ---------------------------------------------------------------------------------------------
// Checkpoints: one model.safetensors or shards listed by model.safetensors.index.json

namespace detail {

// Parses JSON text into a DOM, rejecting duplicate object keys at any depth (the DOM keeps only the last).
inline nlohmann::json parse_json_unique(std::string_view text, const std::string& what) {
    std::vector<std::unordered_set<std::string>> keys;
    std::string dup;
    auto cb = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
        using E = nlohmann::json::parse_event_t;
        if (ev == E::object_start) keys.emplace_back();
        else if (ev == E::object_end) {
            if (!keys.empty()) keys.pop_back();
        } else if (ev == E::key && !keys.empty()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (!keys.back().insert(k).second && dup.empty()) dup = k;
        }
        return true;
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text.begin(), text.end(), cb);
    } catch (const nlohmann::json::exception& e) {
        fail(what, ": invalid JSON: ", e.what());
    }
    check(dup.empty(), what, ": duplicate key '", dup, "'");
    return j;
}

// Reads a small text file (JSON configs), refusing anything over `limit` bytes.
inline std::string read_text_file(const std::string& path, std::uint64_t limit = 64u << 20) {
    std::error_code ec;
    check(std::filesystem::is_regular_file(path, ec), path, ": cannot open file (no such file)");
    const auto size = std::filesystem::file_size(path, ec);
    check(!ec, path, ": cannot determine the file size");
    check(size <= limit, path, ": file of ", size, " bytes exceeds the limit of ", limit, " bytes");
    std::ifstream in(path, std::ios::binary);
    check(bool(in), path, ": cannot open file");
    std::string s(std::size_t(size), '\0');
    in.read(s.data(), std::streamsize(s.size()));
    check(in.gcount() == std::streamsize(s.size()), path, ": read error");
    return s;
}

}  // namespace detail

/// A checkpoint directory: `model.safetensors`, or the shards named by `model.safetensors.index.json`
/// ({"metadata": {...}, "weight_map": {tensor: shard file}}). Every tensor must sit in the shard the
/// index names, and every tensor of a shard must be listed.
class Checkpoint {
public:
    /// Opens `path`: a directory as above, or a single .safetensors file.
    static Checkpoint open(const std::string& path) {
        namespace fs = std::filesystem;
        Checkpoint c;
        c.path_ = path;
        std::error_code ec;
        if (fs::is_regular_file(path, ec)) {
            c.add_single(path);
            return c;
        }
        check(fs::is_directory(path, ec), path, ": no such checkpoint file or directory");
        const fs::path dir(path);
        const fs::path index = dir / "model.safetensors.index.json";
        if (fs::exists(index, ec)) {
            c.open_index(dir, index.string());
            return c;
        }
        const fs::path single = dir / "model.safetensors";
        check(fs::exists(single, ec), path, ": neither model.safetensors nor model.safetensors.index.json found");
        c.add_single(single.string());
        return c;
    }

    const std::string& path() const { return path_; }
    /// Tensor names (file order, shard by shard).
    const std::vector<std::string>& names() const { return names_; }
    bool contains(const std::string& name) const { return where_.count(name) != 0; }
    const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
    /// The shard holding `name`.
    const SafetensorsFile& file_of(const std::string& name) const {
        auto it = where_.find(name);
        if (it == where_.end()) fail(path_, ": no tensor named '", name, "'");
        return files_[it->second];
    }
    const std::vector<SafetensorsFile>& files() const { return files_; }
    /// Index metadata (sharded) or the file's __metadata__ (single file).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }

    void read_into(const std::string& name, std::span<float> dst) const { file_of(name).read_into(name, dst); }
    std::vector<float> read_float(const std::string& name) const { return file_of(name).read_float(name); }

private:
    void add_single(const std::string& file) {
        files_.emplace_back(file);
        metadata_ = files_.back().metadata();
        for (const auto& t : files_.back().tensors()) {
            names_.push_back(t.name);
            where_.emplace(t.name, 0);
        }
    }
    void open_index(const std::filesystem::path& dir, const std::string& index_path) {
        const auto j = detail::parse_json_unique(detail::read_text_file(index_path), index_path);
        check(j.is_object(), index_path, ": not a JSON object");
        check(j.contains("weight_map") && j["weight_map"].is_object(), index_path, ": missing object 'weight_map'");
        if (j.contains("metadata") && j["metadata"].is_object())
            for (const auto& [k, v] : j["metadata"].items()) metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
        std::map<std::string, std::size_t> shard_ids;
        std::unordered_map<std::string, std::string> want;  // tensor -> shard file
        for (const auto& [name, file] : j["weight_map"].items()) {
            check(file.is_string(), index_path, ": weight_map['", name, "'] is not a string");
            const auto& f = file.get_ref<const std::string&>();
            // Shards live beside the index: a plain file name, never a path out of the directory.
            check(!f.empty() && f.find('/') == std::string::npos && f.find('\\') == std::string::npos && f != "." &&
                      f != "..",
                  index_path, ": weight_map['", name, "']: shard '", f, "' is not a file name in the checkpoint directory");
            want.emplace(name, f);
            shard_ids.emplace(f, 0);
        }
        for (auto& [f, id] : shard_ids) {
            id = files_.size();
            files_.emplace_back((dir / f).string());
        }
        for (const auto& file : files_)
            for (const auto& t : file.tensors()) {
                auto it = want.find(t.name);
                check(it != want.end(), index_path, ": tensor '", t.name, "' of ", file.path(),
                      " is not listed in weight_map");
                check((dir / it->second).string() == file.path(), index_path, ": tensor '", t.name, "' is in ",
                      file.path(), " but weight_map names ", it->second);
                names_.push_back(t.name);
                where_.emplace(t.name, std::size_t(&file - files_.data()));
            }
        for (const auto& [name, f] : want)
            check(where_.count(name) != 0, index_path, ": tensor '", name, "' listed in weight_map is missing from ",
                  (dir / f).string());
    }

    std::string path_;
    std::vector<SafetensorsFile> files_;
    std::vector<std::string> names_;
    std::unordered_map<std::string, std::size_t> where_;
    std::map<std::string, std::string> metadata_;
};

}  // namespace hystack::io
