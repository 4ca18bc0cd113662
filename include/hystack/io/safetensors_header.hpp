#pragma once
#include "../core/module.hpp"

// Parsing and validating a safetensors header (detail::parse_header). Everything read from a file is
// untrusted: every malformed header gets a hystack::error naming the file and the problem (never a
// crash, hang or allocation sized by the file's claims). The JSON is parsed with a SAX handler
// (detail::HeaderSax) that builds only the tensor table (memory proportional to the header, which is
// capped at max_header_bytes) and catches duplicate names, which a JSON DOM would silently merge.
// The data section must be covered exactly: no gaps, overlaps, out-of-range or trailing bytes.

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "safetensors_format.hpp"

namespace hystack::io {

namespace detail {

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

}  // namespace hystack::io
