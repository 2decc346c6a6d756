// Rows of a kernel's inputs and outputs in the accumulation type acc_t (at::opmath_type:
// float for half / bfloat16, else the type itself), for the CPU attention kernels whose vector
// loops and GEMMs run on acc_t. float and double rows are used in place (no copy); half and
// bfloat16 rows are widened into a caller's buffer, and results rounded back with store_rows.
#pragma once

#include <ATen/cpu/vec/functional.h>  // after lstm_cell_vec.h, which sets the instruction set

#include <cstdint>
#include <type_traits>
#include <vector>

namespace lstm_fused {
namespace cpu {

// rows x cols elements whose rows start ld apart, as acc_t rows *ld_out apart.
template <typename scalar_t, typename acc_t>
const acc_t* rows_as_acc(const scalar_t* src, int64_t ld, int64_t rows, int64_t cols,
                         std::vector<acc_t>& buf, int64_t* ld_out) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    *ld_out = ld;
    return src;
  } else {
    buf.resize(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) buf[r * cols + c] = static_cast<acc_t>(src[r * ld + c]);
    *ld_out = cols;
    return buf.data();
  }
}

// Where a kernel writes n contiguous output elements: the output itself when scalar_t is
// acc_t, else `buf` (then store_rows(dst, buf, n)).
template <typename scalar_t, typename acc_t>
acc_t* out_rows(scalar_t* dst, int64_t n, std::vector<acc_t>& buf) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return dst;
  } else {
    buf.resize(n);
    return buf.data();
  }
}

template <typename scalar_t, typename acc_t>
void store_rows(scalar_t* dst, const acc_t* src, int64_t n) {
  if constexpr (!std::is_same_v<scalar_t, acc_t>) {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<scalar_t>(src[i]);
  }
}

// sum_i a[i] b[i] over n acc_t elements (at::vec).
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  using V = at::vec::Vectorized<T>;
  return at::vec::map2_reduce_all<T>([](V x, V y) { return x * y; },
                                     [](V x, V y) { return x + y; }, a, b, n);
}

}  // namespace cpu
}  // namespace lstm_fused
