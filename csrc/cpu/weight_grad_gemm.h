// The weight gradients of a layer's backward as register-tile GEMMs, for the CPU (at::vec):
// grad_W (M, N) = dZ^T A, with dZ (K, M) the gradient of the pre-activations of all steps
// (K = T*B rows, M = G columns) and A (K, N) what the weight multiplied (x_t, or h_{t-1}).
//
// A tile of C is 4 columns of dZ (four broadcast values per row k) times 4 vectors of A's row
// k (64 floats with AVX-512): 16 accumulators over the rows k, like the forward's tiles
// (lstm_recurrent_tile.h). dZ^T is never formed.
//
// Blocking: the rows k come in blocks of kKBlock. Per block, each thread packs the block of A
// tile by tile (so that a tile streams it front to back; the packed block, N * kKBlock values,
// stays in the core's L2) and, for kGroupTiles tiles at a time, their columns of dZ (next to
// each other in a strip). Then each tile of A's block (kKBlock x 4U, 32 KB of float) passes
// over the group's tiles of dZ while it is in L1. Each thread owns a range of C's rows (dZ's
// columns), so threads never share an output and never wait for each other; every element of
// C is summed over the same blocks in the same order whatever the threads.
//
// It is faster than at::mm with a transposed operand (the measurements: bench/results/).
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <memory>

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

// Rows of dZ and A per block: a packed tile of A is then 32 KB of float (L1), the packed block
// 256 KB at N = 512 floats (L2). (2-core AMD EPYC, dW_hh at T*B = 3200, G = 4096, N = 1024:
// 512 rows, which left the packed block in L3, took 1.5x the time.)
constexpr int64_t kKBlock = 128;

// C[m0 : m0 + 4, n0 : n0 + 4U) (+)= dZ[rows, m0 : m0 + 4]^T A[rows, n0 : n0 + 4U) over kc rows:
// dz points at the block's strip (row stride ldz, at column m0), a at the packed tile of A
// (kc rows of 4U values, zero past N). n_cnt < 4U: only the first n_cnt columns are stored.
// accumulate: add to C (a later block of rows) instead of overwriting it.
template <typename T>
inline void atb_tile(const T* dz, int64_t ldz, const T* a, T* c, int64_t ldc, int64_t kc,
                     int64_t n_cnt, bool accumulate) {
  using V = at::vec::Vectorized<T>;
  const int64_t U = V::size();
  // Named accumulators (see step_tile in lstm_recurrent_tile.h for why not an array).
  V a00(T(0)), a01(T(0)), a02(T(0)), a03(T(0)), a10(T(0)), a11(T(0)), a12(T(0)), a13(T(0)),
      a20(T(0)), a21(T(0)), a22(T(0)), a23(T(0)), a30(T(0)), a31(T(0)), a32(T(0)), a33(T(0));
  for (int64_t k = 0; k < kc; ++k, dz += ldz, a += 4 * U) {
    const V v0 = V::loadu(a), v1 = V::loadu(a + U), v2 = V::loadu(a + 2 * U),
            v3 = V::loadu(a + 3 * U);
#define LSTM_FUSED_ATB_ROW(r)                 \
  {                                           \
    const V z(dz[r]);                         \
    a##r##0 = at::vec::fmadd(z, v0, a##r##0); \
    a##r##1 = at::vec::fmadd(z, v1, a##r##1); \
    a##r##2 = at::vec::fmadd(z, v2, a##r##2); \
    a##r##3 = at::vec::fmadd(z, v3, a##r##3); \
  }
    LSTM_FUSED_ATB_ROW(0)
    LSTM_FUSED_ATB_ROW(1)
    LSTM_FUSED_ATB_ROW(2)
    LSTM_FUSED_ATB_ROW(3)
#undef LSTM_FUSED_ATB_ROW
  }
  const V acc[4][4] = {
      {a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
  for (int r = 0; r < 4; ++r)
    for (int j = 0; j < 4; ++j) {
      const int64_t cnt = std::clamp<int64_t>(n_cnt - j * U, 0, U);
      if (cnt == 0) break;
      T* out = c + r * ldc + j * U;
      const V v = accumulate ? acc[r][j] + V::loadu(out, cnt) : acc[r][j];
      v.store(out, cnt);
    }
}

// c (M, N), row stride ldc, = dz^T a, for dz (K, M) and a (K, N) with row strides ldz and lda.
// M is a multiple of 4 (M = G = 4H). K = 0 gives zeros. row_valid (K,) or null: rows k with
// row_valid[k] == 0 are packed as zeros, never read from a (padded steps, whose dz rows are
// zero anyway: 0 * NaN would be NaN). col_sum (M) or null: also the sums of dz's columns over
// the K rows (the bias gradient), from the strips of dz as they are copied.
template <typename T>
void gemm_at_b(const T* dz, int64_t ldz, const T* a, int64_t lda, T* c, int64_t ldc, int64_t M,
               int64_t N, int64_t K, const uint8_t* row_valid = nullptr, T* col_sum = nullptr) {
  using V = at::vec::Vectorized<T>;
  const int64_t U = V::size(), W = 4 * U;  // columns of a tile
  if (K == 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, T(0));
    if (col_sum != nullptr) std::fill(col_sum, col_sum + M, T(0));
    return;
  }
  const int64_t n_row_tiles = M / 4, n_col_tiles = (N + W - 1) / W;
  at::parallel_for(0, n_row_tiles, 16, [&](int64_t i0, int64_t i1) {
    // Per thread, per block of rows: A's block packed tile by tile, (n_col_tiles, kc, W), zero
    // past N, so that a tile streams its operand front to back (in A its rows are N apart); and
    // dz's columns of kGroupTiles tiles copied next to each other (in dz they are M apart). Both
    // strides are powers of two at usual sizes, which puts the rows of a block into a few L1
    // sets. Each thread packs the whole block of A for itself: a few per cent of the block's
    // multiply-adds in copies, and no synchronisation.
    constexpr int64_t kGroupTiles = 8;
    static_assert(4 * kGroupTiles % V::size() == 0, "strip rows of whole vectors");
    // Left uninitialised: every value read is packed first (tails zero-filled explicitly).
    const int64_t k_block = std::min(K, kKBlock);
    std::unique_ptr<T[]> a_pack(new T[n_col_tiles * k_block * W]),
        strip(new T[k_block * 4 * kGroupTiles]);
    const int64_t ls = 4 * kGroupTiles;  // row stride of the strip
    for (int64_t k0 = 0; k0 < K; k0 += kKBlock) {
      const int64_t kc = std::min(kKBlock, K - k0);
      const bool accumulate = k0 > 0;
      // The copies in vectors: rows of a few cache lines each, too short for memmove calls.
      for (int64_t j = 0; j < n_col_tiles; ++j) {
        const int64_t n0 = j * W, nc = std::min(W, N - n0);
        T* dst = a_pack.get() + j * kc * W;
        for (int64_t k = 0; k < kc; ++k, dst += W) {
          const T* src = a + (k0 + k) * lda + n0;
          const bool valid = row_valid == nullptr || row_valid[k0 + k];
          for (int64_t v = 0; v < W; v += U) {
            const int64_t cnt = valid ? std::clamp<int64_t>(nc - v, 0, U) : 0;
            (cnt == U  ? V::loadu(src + v)
             : cnt > 0 ? V::loadu(src + v, cnt)
                       : V(T(0)))
                .store(dst + v);
          }
        }
      }
      for (int64_t g0 = i0; g0 < i1; g0 += kGroupTiles) {
        const int64_t m_g = 4 * g0, cols = 4 * std::min(kGroupTiles, i1 - g0);
        // Strip rows are ls >= U apart: whole vectors fit; past cols they are never read. With
        // col_sum, the block's sums of the columns, then added to the earlier blocks'.
        for (int64_t v = 0; v < cols; v += U) {
          const int64_t cnt = std::min(U, cols - v);
          V sum(T(0));
          for (int64_t k = 0; k < kc; ++k) {
            const T* src = dz + (k0 + k) * ldz + m_g + v;
            const V z = cnt == U ? V::loadu(src) : V::loadu(src, cnt);
            z.store(strip.get() + k * ls + v);
            sum = sum + z;
          }
          if (col_sum != nullptr) {
            T* out = col_sum + m_g + v;
            (accumulate ? V::loadu(out, cnt) + sum : sum).store(out, cnt);
          }
        }
        for (int64_t j = 0; j < n_col_tiles; ++j) {  // a tile of A stays in L1 for the group
          const T* a_j = a_pack.get() + j * kc * W;
          const int64_t n0 = j * W, nc = std::min(W, N - n0);
          for (int64_t i = g0; i < std::min(i1, g0 + kGroupTiles); ++i) {
            const int64_t m0 = 4 * i;
            atb_tile<T>(strip.get() + (m0 - m_g), ls, a_j, c + m0 * ldc + n0, ldc, kc, nc,
                        accumulate);
          }
        }
      }
    }
  });
}

// out (M, N) = dz^T a for CPU tensors dz (K, M) and a (K, N) whose rows are contiguous (any
// row stride); out contiguous. Float and double. row_valid: as gemm_at_b. col_sum: undefined,
// or a contiguous (M) tensor that gets the sums of dz's columns.
inline void weight_grad(at::Tensor& out, const at::Tensor& dz, const at::Tensor& a,
                        const uint8_t* row_valid = nullptr, const at::Tensor& col_sum = {}) {
  TORCH_INTERNAL_ASSERT(dz.dim() == 2 && a.dim() == 2 && dz.size(0) == a.size(0));
  // Only row strides are used: a column stride matters only when there is more than one
  // column (a (K, 1) tensor counts as contiguous whatever its stride(1)).
  TORCH_INTERNAL_ASSERT((dz.size(1) <= 1 || dz.stride(1) == 1) &&
                        (a.size(1) <= 1 || a.stride(1) == 1) && out.is_contiguous());
  TORCH_INTERNAL_ASSERT(dz.size(1) % 4 == 0);
  TORCH_INTERNAL_ASSERT(!col_sum.defined() ||
                        (col_sum.is_contiguous() && col_sum.numel() == dz.size(1)));
  AT_DISPATCH_FLOATING_TYPES(dz.scalar_type(), "lstm_fused_weight_grad", [&] {
    gemm_at_b<scalar_t>(dz.data_ptr<scalar_t>(), dz.stride(0), a.data_ptr<scalar_t>(), a.stride(0),
                        out.data_ptr<scalar_t>(), out.size(1), dz.size(1), a.size(1), dz.size(0),
                        row_valid, col_sum.defined() ? col_sum.data_ptr<scalar_t>() : nullptr);
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
