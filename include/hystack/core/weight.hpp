#pragma once
#include "module.hpp"

// Typed weights: the element type of a weight matrix travels with it, so the projection kernels
// dispatch on it (kernels/project.hpp) and a loader converts to it (io/params.hpp). Types: f32,
// bf16 (the top half of an f32) and q8_0 (GGUF's 34-byte blocks of 32 int8 and a half scale, the
// same bytes as in a GGUF file; rows must be whole blocks).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bf16.hpp"
#include "error.hpp"
#include "param.hpp"
#include "q8_0.hpp"
#include "view.hpp"

namespace hystack {

/// Element type of a weight matrix.
enum class DType : std::uint8_t { f32 = 0, bf16 = 1, q8_0 = 2 };

inline const char* to_string(DType t) {
    switch (t) {
        case DType::f32: return "f32";
        case DType::bf16: return "bf16";
        case DType::q8_0: return "q8_0";
    }
    return "unknown";
}

/// The DType named `name` ("f32", "bf16", "q8_0"); throws naming the known ones otherwise.
inline DType dtype_from_string(const std::string& name) {
    for (DType t : {DType::f32, DType::bf16, DType::q8_0})
        if (name == to_string(t)) return t;
    fail("unknown weight type '", name, "' (known: f32, bf16, q8_0)");
}

/// Whether a row of n elements can be stored as t (q8_0: whole blocks of 32).
inline bool row_fits(DType t, std::size_t n) { return t != DType::q8_0 || n % block_q8_0::size == 0; }

/// t when a row of n elements fits it, else f32 (a q8_0 model keeps such matrices in f32).
inline DType fitting_type(DType t, std::size_t n) { return row_fits(t, n) ? t : DType::f32; }

/// Bytes of one row of n elements of type t (throws when the row does not fit the type).
inline std::size_t row_bytes(DType t, std::size_t n) {
    switch (t) {
        case DType::f32: return n * sizeof(float);
        case DType::bf16: return n * sizeof(bf16);
        case DType::q8_0:
            check(row_fits(t, n), "q8_0 rows hold whole blocks of ", block_q8_0::size, " values, got a row of ", n);
            return n / block_q8_0::size * sizeof(block_q8_0);
    }
    fail("row_bytes: unknown element type ", int(t));
}

/// dst [row_bytes(t, n)] = the n floats of src stored as t (f32 copied, bf16 rounded to nearest even,
/// q8_0 by ggml's quantiser).
inline void encode_row(DType t, std::span<const float> src, std::span<std::byte> dst) {
    check(dst.size() == row_bytes(t, src.size()), "encode_row: ", src.size(), " values as ", to_string(t), " take ",
          row_bytes(t, src.size()), " bytes, got ", dst.size());
    switch (t) {
        case DType::f32: std::memcpy(dst.data(), src.data(), src.size_bytes()); return;
        case DType::bf16: return narrow(src, std::span<bf16>(reinterpret_cast<bf16*>(dst.data()), src.size()));
        case DType::q8_0:
            return quantize_q8_0(src, std::span<block_q8_0>(reinterpret_cast<block_q8_0*>(dst.data()),
                                                             src.size() / block_q8_0::size));
    }
}

/// dst [n] = the row of n values of type t in src, as floats (exact).
inline void decode_row(DType t, std::span<const std::byte> src, std::span<float> dst) {
    check(src.size() == row_bytes(t, dst.size()), "decode_row: ", dst.size(), " values as ", to_string(t), " take ",
          row_bytes(t, dst.size()), " bytes, got ", src.size());
    switch (t) {
        case DType::f32: std::memcpy(dst.data(), src.data(), src.size()); return;
        case DType::bf16: return widen(std::span<const bf16>(reinterpret_cast<const bf16*>(src.data()), dst.size()), dst);
        case DType::q8_0:
            return dequantize_q8_0(std::span<const block_q8_0>(reinterpret_cast<const block_q8_0*>(src.data()),
                                                                dst.size() / block_q8_0::size),
                                   dst);
    }
}

/// Non-owning typed view of a row-major weight matrix W [rows, cols], rows row_bytes(type, cols) apart.
struct WeightView {
    DType type = DType::f32;
    const std::byte* data = nullptr;
    std::size_t rows = 0, cols = 0;

    /// An f32 matrix as a weight (rows must be contiguous).
    static WeightView of(MatrixView<const float> m) {
        check(m.contiguous() || m.rows <= 1, "WeightView::of: needs contiguous rows, got stride ", m.stride, " for ",
              m.cols, " columns");
        return {DType::f32, reinterpret_cast<const std::byte*>(m.data), m.rows, m.cols};
    }
    std::size_t row_bytes() const { return hystack::row_bytes(type, cols); }
    /// Bytes of row r.
    const std::byte* row(std::size_t r) const { return data + r * row_bytes(); }
    std::size_t bytes() const { return rows * row_bytes(); }
    /// Rows [begin, begin + n) (e.g. one expert of a stacked expert matrix).
    WeightView rows_slice(std::size_t begin, std::size_t n) const {
        return {type, data + begin * row_bytes(), n, cols};
    }
    /// The matrix as f32 (throws for another element type).
    MatrixView<const float> f32() const {
        if (type != DType::f32) [[unlikely]]
            fail("weight [", rows, ", ", cols, "] is ", to_string(type), ", expected f32");
        return {reinterpret_cast<const float*>(data), rows, cols};
    }
};

/// Owning typed weight matrix [rows, cols], zero at construction, 64-byte aligned (2 MB and huge
/// pages when large, see Buffer). Copyable (deep copy).
class Weight {
public:
    Weight() = default;
    Weight(std::size_t rows, std::size_t cols, DType type = DType::f32)
        : type_(type), rows_(rows), cols_(cols), bytes_(rows * hystack::row_bytes(type, cols)) {}

    DType type() const { return type_; }
    std::size_t rows() const { return rows_; }
    std::size_t cols() const { return cols_; }
    /// Bytes of storage.
    std::size_t bytes() const { return bytes_.size(); }
    WeightView view() const { return {type_, bytes_.data(), rows_, cols_}; }
    /// The storage as an f32 matrix, writable (throws for another element type).
    MatrixView<float> f32() {
        (void)view().f32();
        return {reinterpret_cast<float*>(bytes_.data()), rows_, cols_};
    }
    /// Rows [r, r + n) of the storage, writable.
    std::span<std::byte> row_bytes(std::size_t r, std::size_t n) {
        check(r <= rows_ && n <= rows_ - r, "Weight: rows [", r, ", ", r + n, ") of ", rows_);
        const std::size_t rb = hystack::row_bytes(type_, cols_);
        return {bytes_.data() + r * rb, n * rb};
    }
    /// A weight of type t holding the f32 matrix m (converted row by row with encode_row).
    static Weight from(MatrixView<const float> m, DType t = DType::f32) {
        Weight w(m.rows, m.cols, t);
        for (std::size_t r = 0; r < m.rows; ++r) encode_row(t, std::span<const float>(m.row(r), m.cols), w.row_bytes(r, 1));
        return w;
    }
    /// Changes the element type (storage reallocated and zeroed; a no-op when already t). Throws when a
    /// row does not fit t (q8_0: cols not a multiple of 32).
    void retype(DType t) {
        if (t == type_) return;
        const std::size_t n = rows_ * hystack::row_bytes(t, cols_);
        bytes_ = Buffer<std::byte>();  // free first: the old and the new storage never coexist
        bytes_.resize(n);
        type_ = t;
    }
    /// Rows [row0, row0 + rows) of the weight as parameter `name` with HF shape `shape` (product
    /// rows * cols); a loader may retype the weight through it.
    ParamRef param(std::string name, std::vector<std::size_t> shape, std::size_t row0 = 0, std::size_t rows = 0) {
        if (rows == 0) rows = rows_ - row0;
        ParamRef p{std::move(name), std::move(shape), {}, false, this, row0, rows};
        if (type_ == DType::f32) p.data = std::span<float>(f32().row(row0), rows * cols_);
        return p;
    }

private:
    DType type_ = DType::f32;
    std::size_t rows_ = 0, cols_ = 0;
    Buffer<std::byte> bytes_;
};

/// Element type of a parameter: its weight's, f32 for a plain parameter.
inline DType param_dtype(const ParamRef& p) { return p.weight ? p.weight->type() : DType::f32; }

/// Bytes of storage a parameter holds.
inline std::size_t param_bytes(const ParamRef& p) {
    return p.weight ? p.rows * hystack::row_bytes(p.weight->type(), p.weight->cols()) : p.data.size_bytes();
}

/// Elements of a parameter (the product of its shape).
inline std::size_t param_numel(const ParamRef& p) {
    std::size_t n = 1;
    for (auto d : p.shape) n *= d;
    return n;
}

}  // namespace hystack
