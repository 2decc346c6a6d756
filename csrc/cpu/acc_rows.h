// Rows of a kernel's inputs and outputs in the accumulation type acc_t (at::opmath_type:
// float for half / bfloat16, else the type itself), for the CPU attention kernels whose vector
// loops and GEMMs run on acc_t. float and double rows are used in place (no copy); half and
// bfloat16 rows are widened into a caller's buffer, and results rounded back with store_rows.
#pragma once

#include "cpu/capability.h"           // first: it picks at::vec's instruction set
#include <ATen/cpu/vec/functional.h>  // after capability.h

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

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
  return at::vec::map2_reduce_all<T>([](V x, V y) { return x * y; }, [](V x, V y) { return x + y; },
                                     a, b, n);
}

// The additive-attention score of one step: v . tanh(p + u) over A elements (p the step's
// W_h h_t + b, u the projected query or zeros).
template <typename T>
T additive_score(const T* p, const T* u, const T* v, int64_t A) {
  using V = at::vec::Vectorized<T>;
  return at::vec::map3_reduce_all<T>([](V pp, V uu, V vv) { return vv * (pp + uu).tanh(); },
                                     [](V x, V y) { return x + y; }, p, u, v, A);
}

// out (D) = sum_t w[t] X[t] over n rows of D elements, ld apart: register blocks of 4 vectors
// of D, each summed over all rows before it is stored.
template <typename T>
void weighted_row_sum(const T* w, const T* X, int64_t ld, int64_t n, int64_t D, T* out) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t kV = V::size();
  int64_t d = 0;
  for (; d + 4 * kV <= D; d += 4 * kV) {
    V a0(T(0)), a1(T(0)), a2(T(0)), a3(T(0));
    for (int64_t t = 0; t < n; ++t) {
      const V wt(w[t]);
      const T* r = X + t * ld + d;
      a0 = at::vec::fmadd(wt, V::loadu(r), a0);
      a1 = at::vec::fmadd(wt, V::loadu(r + kV), a1);
      a2 = at::vec::fmadd(wt, V::loadu(r + 2 * kV), a2);
      a3 = at::vec::fmadd(wt, V::loadu(r + 3 * kV), a3);
    }
    a0.store(out + d);
    a1.store(out + d + kV);
    a2.store(out + d + 2 * kV);
    a3.store(out + d + 3 * kV);
  }
  for (; d < D; d += kV) {
    const int64_t cnt = std::min<int64_t>(kV, D - d);
    V a(T(0));
    for (int64_t t = 0; t < n; ++t) a = at::vec::fmadd(V(w[t]), V::loadu(X + t * ld + d, cnt), a);
    a.store(out + d, cnt);
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
