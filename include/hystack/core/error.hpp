#pragma once
#include "module.hpp"

#include <cstddef>
#include <initializer_list>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace hystack {

/// Every error hystack reports. Messages name what was wrong, what was expected and what was given,
/// e.g. "q: expected [*, 512], got [7, 256]".
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

namespace detail {
inline void append_all(std::ostringstream&) {}
template <class T, class... Rest>
void append_all(std::ostringstream& os, const T& v, const Rest&... rest) {
    os << v;
    append_all(os, rest...);
}
}  // namespace detail

/// Builds a message from its parts (anything with operator<<) and throws hystack::error.
template <class... Parts>
[[noreturn]] void fail(const Parts&... parts) {
    std::ostringstream os;
    detail::append_all(os, parts...);
    throw error(os.str());
}

/// Throws hystack::error with the concatenated parts when `ok` is false.
template <class... Parts>
inline void check(bool ok, const Parts&... parts) {
    if (!ok) [[unlikely]]
        fail(parts...);
}

/// Shape vocabulary for messages: a dimension of `any` prints as '*'.
inline constexpr std::size_t any = static_cast<std::size_t>(-1);

/// "[7, 256]"; `any` dims print as '*'.
inline std::string shape_string(std::initializer_list<std::size_t> dims) {
    std::string s = "[";
    bool first = true;
    for (auto d : dims) {
        if (!first) s += ", ";
        first = false;
        s += d == any ? std::string("*") : std::to_string(d);
    }
    return s + "]";
}

/// A message name "who: what" (e.g. "selective_scan: u") formatted only when a check fails, so
/// the checks on a decode path allocate nothing.
struct ArgName {
    std::string_view who, what;
    friend std::ostream& operator<<(std::ostream& os, const ArgName& a) { return os << a.who << ": " << a.what; }
};

/// Checks a 2-D shape: check_shape("q", rows, cols, any, 512) -> "q: expected [*, 512], got [7, 256]".
/// `what` is anything printable (a string, an ArgName).
template <class Name>
inline void check_shape(const Name& what, std::size_t rows, std::size_t cols, std::size_t want_rows, std::size_t want_cols) {
    if ((want_rows != any && rows != want_rows) || (want_cols != any && cols != want_cols)) [[unlikely]]
        fail(what, ": expected ", shape_string({want_rows, want_cols}), ", got ", shape_string({rows, cols}));
}
/// Checks a 1-D length: check_size("bias", n, 512) -> "bias: expected [512], got [7]".
template <class Name>
inline void check_size(const Name& what, std::size_t n, std::size_t want) {
    if (want != any && n != want) [[unlikely]]
        fail(what, ": expected ", shape_string({want}), ", got ", shape_string({n}));
}

}  // namespace hystack
