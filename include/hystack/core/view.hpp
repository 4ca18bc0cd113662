#pragma once
#include "module.hpp"

#include <Eigen/Core>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

#include "error.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace hystack {

// Vocabulary: 1-D data is a std::span; 2-D data is a MatrixView (row-major with a row stride),
// non-owning like Eigen::Map. Weights are viewed in place, never copied. Owning storage is
// Buffer/Matrix, 64-byte aligned so SIMD loads of a row start never split a cache line.

/// Token ids of the models (HF's int ids; vocabularies stay far below 2^31).
using token_id = std::int32_t;

/// Non-owning row-major matrix view: element (r, c) is data[r * stride + c].
/// T may be const-qualified. Shapes are checked with check_shape().
template <class T>
struct MatrixView {
    T* data = nullptr;
    std::size_t rows = 0;
    std::size_t cols = 0;
    std::size_t stride = 0;  // elements between row starts, >= cols

    constexpr MatrixView() = default;
    constexpr MatrixView(T* d, std::size_t r, std::size_t c) : data(d), rows(r), cols(c), stride(c) {}
    constexpr MatrixView(T* d, std::size_t r, std::size_t c, std::size_t s) : data(d), rows(r), cols(c), stride(s) {}
    /// A view of T converts to a view of const T.
    template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
    constexpr MatrixView(const MatrixView<U>& o) : data(o.data), rows(o.rows), cols(o.cols), stride(o.stride) {}

    constexpr T* row(std::size_t r) const { return data + r * stride; }
    constexpr T& operator()(std::size_t r, std::size_t c) const { return data[r * stride + c]; }
    constexpr std::span<T> row_span(std::size_t r) const { return {row(r), cols}; }
    /// Rows [begin, begin + n).
    constexpr MatrixView rows_slice(std::size_t begin, std::size_t n) const { return {row(begin), n, cols, stride}; }
    /// Columns [begin, begin + n) of every row.
    constexpr MatrixView cols_slice(std::size_t begin, std::size_t n) const { return {data + begin, rows, n, stride}; }
    constexpr bool contiguous() const { return stride == cols; }
    constexpr bool empty() const { return rows == 0 || cols == 0; }

    using EigenMatrix = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using EigenMap = Eigen::Map<std::conditional_t<std::is_const_v<T>, const EigenMatrix, EigenMatrix>, Eigen::Unaligned,
                                Eigen::OuterStride<>>;
    /// The same memory as an Eigen map (row-major, outer stride = stride).
    EigenMap eigen() const {
        return EigenMap(data, Eigen::Index(rows), Eigen::Index(cols), Eigen::OuterStride<>(Eigen::Index(stride)));
    }
    /// A view of an Eigen row-major dense object with unit inner stride (a Matrix, a Map, a block
    /// of either): the same memory, not a copy. The other direction of eigen().
    template <class Derived>
    static MatrixView of(Eigen::PlainObjectBase<Derived>& m) {
        static_assert(Derived::IsRowMajor, "MatrixView::of: needs a row-major Eigen object");
        return {m.data(), std::size_t(m.rows()), std::size_t(m.cols()), std::size_t(m.outerStride())};
    }
    template <class Derived>
    static MatrixView of(const Eigen::PlainObjectBase<Derived>& m)
        requires std::is_const_v<T>
    {
        static_assert(Derived::IsRowMajor, "MatrixView::of: needs a row-major Eigen object");
        return {m.data(), std::size_t(m.rows()), std::size_t(m.cols()), std::size_t(m.outerStride())};
    }
    template <class Derived, int Access>
    static MatrixView of(const Eigen::MapBase<Derived, Access>& m) {
        static_assert(Derived::IsRowMajor, "MatrixView::of: needs a row-major Eigen object");
        check(m.innerStride() == 1, "MatrixView::of: needs unit inner stride, got ", m.innerStride());
        return {const_cast<T*>(m.data()), std::size_t(m.rows()), std::size_t(m.cols()), std::size_t(m.outerStride())};
    }
};

/// A span as an Eigen column vector map (the same memory), for references written as Eigen expressions.
template <class T, std::size_t E>
auto eigen_vector(std::span<T, E> s) {
    using V = Eigen::Matrix<std::remove_const_t<T>, Eigen::Dynamic, 1>;
    return Eigen::Map<std::conditional_t<std::is_const_v<T>, const V, V>>(s.data(), Eigen::Index(s.size()));
}
/// An Eigen vector (or map of one) as a span: the same memory.
template <class Derived>
auto span_of(Eigen::PlainObjectBase<Derived>& v) {
    return std::span<typename Derived::Scalar>(v.data(), std::size_t(v.size()));
}

template <class Name, class T>
void check_shape(const Name& what, const MatrixView<T>& m, std::size_t want_rows, std::size_t want_cols) {
    check_shape(what, m.rows, m.cols, want_rows, want_cols);
}
template <class Name, class T, std::size_t E>
void check_size(const Name& what, std::span<T, E> s, std::size_t want) {
    check_size(what, s.size(), want);
}

inline constexpr std::size_t alignment = 64;

/// Buffers of at least this many bytes are aligned to 2 MB and, on Linux, asked for transparent
/// huge pages: weights are streamed once per token, and with 4 KB pages every 4 KB of a weight
/// stream costs a TLB miss (measured: ~10% of decode bandwidth on Zen 5).
inline constexpr std::size_t huge_page_bytes = std::size_t(2) << 20;

namespace detail {
template <class T>
struct AlignedDelete {
    std::align_val_t align{alignment};
    void operator()(T* p) const { ::operator delete[](p, align); }
};

/// Uninitialised storage for n T: 64-byte aligned, 2 MB aligned with a huge-page hint when large.
template <class T>
T* aligned_allocate(std::size_t n, std::align_val_t& align) {
    const std::size_t bytes = n * sizeof(T);
    align = std::align_val_t(bytes >= huge_page_bytes ? huge_page_bytes : alignment);
    void* p = ::operator new[](bytes, align);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // A hint only: where THP is off or "never" this fails harmlessly and the pages stay 4 KB.
    if (bytes >= huge_page_bytes) (void)::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return static_cast<T*>(p);
}
}  // namespace detail

/// Owning, 64-byte-aligned, zero-initialised array of trivially copyable T. Copyable (deep copy).
/// Buffers of huge_page_bytes or more are 2 MB aligned and backed by transparent huge pages where
/// the system allows it.
template <class T>
class Buffer {
    static_assert(std::is_trivially_copyable_v<T>, "Buffer holds trivially copyable elements");

public:
    Buffer() = default;
    explicit Buffer(std::size_t n) { resize(n); }
    Buffer(const Buffer& o) : Buffer(o.size_) { copy_from(o); }
    Buffer(Buffer&&) noexcept = default;
    Buffer& operator=(const Buffer& o) {
        if (this != &o) {
            if (o.size_ != size_) resize(o.size_);
            copy_from(o);
        }
        return *this;
    }
    Buffer& operator=(Buffer&&) noexcept = default;

    /// Reallocates (contents are zeroed) when the size changes; no-op otherwise.
    void resize(std::size_t n) {
        if (n == size_) return;
        if (n) {
            std::align_val_t align{};
            T* p = detail::aligned_allocate<T>(n, align);
            ptr_ = std::unique_ptr<T[], detail::AlignedDelete<T>>(p, detail::AlignedDelete<T>{align});
        } else {
            ptr_.reset();
        }
        size_ = n;
        zero();
    }
    void zero() {
        if (size_) std::memset(static_cast<void*>(ptr_.get()), 0, size_ * sizeof(T));
    }

    T* data() { return ptr_.get(); }
    const T* data() const { return ptr_.get(); }
    std::size_t size() const { return size_; }
    std::size_t bytes() const { return size_ * sizeof(T); }
    bool empty() const { return size_ == 0; }
    T& operator[](std::size_t i) { return ptr_[i]; }
    const T& operator[](std::size_t i) const { return ptr_[i]; }
    T* begin() { return data(); }
    T* end() { return data() + size_; }
    const T* begin() const { return data(); }
    const T* end() const { return data() + size_; }
    std::span<T> span() { return {data(), size_}; }
    std::span<const T> span() const { return {data(), size_}; }
    operator std::span<T>() { return span(); }
    operator std::span<const T>() const { return span(); }

private:
    void copy_from(const Buffer& o) {
        if (size_) std::memcpy(static_cast<void*>(ptr_.get()), o.ptr_.get(), size_ * sizeof(T));
    }
    std::unique_ptr<T[], detail::AlignedDelete<T>> ptr_;
    std::size_t size_ = 0;
};

/// Owning row-major matrix (64-byte aligned, zero-initialised, contiguous rows).
template <class T>
class Matrix {
public:
    Matrix() = default;
    Matrix(std::size_t rows, std::size_t cols) : buf_(rows * cols), rows_(rows), cols_(cols) {}

    /// Reshapes; reallocates and zeroes only when the element count changes.
    void resize(std::size_t rows, std::size_t cols) {
        buf_.resize(rows * cols);
        rows_ = rows;
        cols_ = cols;
    }
    std::size_t rows() const { return rows_; }
    std::size_t cols() const { return cols_; }
    std::size_t size() const { return buf_.size(); }
    std::size_t bytes() const { return buf_.bytes(); }
    T* data() { return buf_.data(); }
    const T* data() const { return buf_.data(); }
    T* row(std::size_t r) { return buf_.data() + r * cols_; }
    const T* row(std::size_t r) const { return buf_.data() + r * cols_; }
    T& operator()(std::size_t r, std::size_t c) { return buf_[r * cols_ + c]; }
    const T& operator()(std::size_t r, std::size_t c) const { return buf_[r * cols_ + c]; }
    void zero() { buf_.zero(); }
    std::span<T> span() { return buf_.span(); }
    std::span<const T> span() const { return buf_.span(); }

    MatrixView<T> view() { return {data(), rows_, cols_}; }
    MatrixView<const T> view() const { return {data(), rows_, cols_}; }
    operator MatrixView<T>() { return view(); }
    operator MatrixView<const T>() const { return view(); }

private:
    Buffer<T> buf_;
    std::size_t rows_ = 0, cols_ = 0;
};

}  // namespace hystack
