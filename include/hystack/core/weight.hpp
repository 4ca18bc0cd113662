#pragma once
#include "module.hpp"

// Typed weights: the element type of a weight matrix travels with it, so the projection kernels
// dispatch on it (kernels/project.hpp) and a loader converts to it. f32 is the one type today; the
// weight-format issue adds bf16 and GGUF's q8_0 blocks as new DType values, their row_bytes, their
// kernels and a loader conversion, with no change to the layers, the stack or the model.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "error.hpp"
#include "param.hpp"
#include "view.hpp"

namespace hystack {

/// Element type of a weight matrix.
enum class DType : std::uint8_t { f32 = 0 };

inline const char* to_string(DType t) {
    switch (t) {
        case DType::f32: return "f32";
    }
    return "unknown";
}

/// Bytes of one row of n elements of type t.
inline std::size_t row_bytes(DType t, std::size_t n) {
    switch (t) {
        case DType::f32: return n * sizeof(float);
    }
    fail("row_bytes: unknown element type ", int(t));
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
    /// The weight as parameter `name` with HF shape `shape` (product rows * cols).
    ParamRef param(std::string name, std::vector<std::size_t> shape) {
        return {std::move(name), std::move(shape), std::span<float>(f32().data, rows_ * cols_), false, type_};
    }

private:
    DType type_ = DType::f32;
    std::size_t rows_ = 0, cols_ = 0;
    Buffer<std::byte> bytes_;
};

}  // namespace hystack
