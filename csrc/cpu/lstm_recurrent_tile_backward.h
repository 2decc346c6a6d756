// The backward counterpart of lstm_recurrent_tile.h: one step of the reverse time loop with
// the recurrent product dh = dz_{t+1} W_hh fused with the cell backward of step t.
//
// A tile is MR batch rows times 4 vectors of hidden units (64 float units with AVX-512): its
// 4 * MR accumulators sum dz_next[r, k] W_hh[k, units] over k in [0, G), the gradient that
// reaches h_t through the recurrence; the cell backward of those units then runs at once and
// writes dz_t (all four gates of those units) and the new dc. No GEMM call in the loop.
// Without projection only (R = H). Dimension letters as in lstm_layer_args.h.
//
// W_hh (G, H) is packed per call into column panels of 4U units (pack_recurrent_t): panel q
// holds, for each k in [0, G), W_hh[k, 4Uq : 4U(q + 1)], zero past H.
//
// A panel is G * 4U values (1 MB of float at H = 1024): more than a core's L2 from H = 1024 on,
// and more than its L1 from H = 64 on, while every tile of rows streams all of it. So where a
// step has more than one tile of rows, the sum over k runs in blocks of kBackKBlock rows of
// the panel (32 KB of float), each block passing over every tile of rows while it is in L1;
// the tiles keep their partial sums in memory between blocks (the same sums in the same
// order: the result is the same bits as one pass).
//
// grad_x = dZ W_ih of the layer's backward (after the time loop) is the same product with
// W_ih's panels and the rows of all steps (input_grad).
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"
#include "cpu/lstm_recurrent_tile.h"  // kTileRows

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

template <typename T>
inline int64_t back_panel_units() {
  return 4 * at::vec::Vectorized<T>::size();
}

// w (G, H) contiguous -> (ceil(H / 4U), G, 4U) column panels, zero-padded past H.
// Rows of a panel per block of the sum over k (see above).
constexpr int64_t kBackKBlock = 128;

template <typename T>
at::Tensor pack_recurrent_t(const at::Tensor& w, int64_t G, int64_t H) {
  const int64_t W = back_panel_units<T>(), n_panels = (H + W - 1) / W;
  at::Tensor packed = H % W == 0 ? at::empty({n_panels, G, W}, w.options())
                                 : at::zeros({n_panels, G, W}, w.options());
  const T* src = w.data_ptr<T>();
  T* dst = packed.data_ptr<T>();
  for (int64_t q = 0; q < n_panels; ++q) {
    const int64_t u0 = q * W, nu = std::min(W, H - u0);
    for (int64_t k = 0; k < G; ++k)
      std::memcpy(dst + (q * G + k) * W, src + k * H + u0, nu * sizeof(T));
  }
  return packed;
}

// Everything one reverse step of one direction reads and writes (row b of a (B, .) operand at
// b * its row stride; pointers offset to the direction already).
template <typename T>
struct RecurrentBackStep {
  const T* panels;   // pack_recurrent_t of W_hh
  const T* dz_next;  // (B, G) dz of the step processed before (t + 1 in the forward's
                     // order), or nullptr at the first processed step
  int64_t t_next;    // its time index (to tell valid rows), unused without dz_next
  const T* gy;       // (B, .) gradient of y_t, row stride gy_stride
  int64_t gy_stride;
  const T* gates;      // (B, G) activated gates of step t
  const T* c;          // (B, H) c_t
  const T* c_prev;     // (B, H) c_{t-1} (c0 at the first step)
  const T* peep;       // (3, H) or nullptr
  T* dh_carry;         // (B, H): gradient reaching h through padded steps (grad_h_n at first)
  T* dc;               // (B, H): gradient of c_t in, of c_{t-1} out
  T* dz;               // (B, G): dz_t out (zero at padded rows)
  const int64_t* len;  // (B)
  int64_t t, H;
  // Resets (lstm_layer_args.h), nullptr for none: rows that started step t (reset) or the step
  // processed before (reset_next) from (h0, c0). A row's gradient does not cross its reset: it
  // is added to dh0_sum and dc0_sum (B, H), and the carry restarts from zero.
  const uint8_t* reset;
  const uint8_t* reset_next;
  const T* c0;  // (B, H)
  T* dh0_sum;
  T* dc0_sum;
  // Partial sums of the recurrent product between blocks of k, (n_panels, B, 4U).
  T* partial;
  int64_t B;
};

// The MR x 4 vectors of a tile of out[rows, 4U units] (+)= a[rows, k0 : k1) panel[k0 : k1, 4U]:
// acc[r][v] starts from `from` (row r at from + r * ld_from, or zeros when from is nullptr),
// then adds a[r * lda + k] * panel[k * 4U + vU ...] for k in [k0, k1) in order. Rows r >= MR are
// left zero.
template <typename T, int MR>
C10_ALWAYS_INLINE void panel_product(const T* a, int64_t lda, const T* panel, int64_t k0,
                                     int64_t k1, const T* from, int64_t ld_from,
                                     at::vec::Vectorized<T> (&acc)[4][4]) {
  using V = at::vec::Vectorized<T>;
  static_assert(MR >= 1 && MR <= 4, "a tile has 1 to 4 rows");
  const int64_t U = V::size(), W = 4 * U;
  // Named accumulators (rows 0..3, vectors 0..3): an array indexed in the loop would be kept
  // in memory by GCC (see lstm_recurrent_tile.h).
  const V zero(T(0));
  V a00 = zero, a01 = zero, a02 = zero, a03 = zero, a10 = zero, a11 = zero, a12 = zero, a13 = zero,
    a20 = zero, a21 = zero, a22 = zero, a23 = zero, a30 = zero, a31 = zero, a32 = zero, a33 = zero;
#define LSTM_FUSED_BACK_FROM(r)        \
  if constexpr (MR > (r)) {            \
    const T* f = from + (r) * ld_from; \
    a##r##0 = V::loadu(f);             \
    a##r##1 = V::loadu(f + U);         \
    a##r##2 = V::loadu(f + 2 * U);     \
    a##r##3 = V::loadu(f + 3 * U);     \
  }
  if (from != nullptr) {
    LSTM_FUSED_BACK_FROM(0)
    LSTM_FUSED_BACK_FROM(1)
    LSTM_FUSED_BACK_FROM(2)
    LSTM_FUSED_BACK_FROM(3)
  }
#undef LSTM_FUSED_BACK_FROM
  const T* w = panel + k0 * W;
  for (int64_t k = k0; k < k1; ++k, w += W) {
    const V w0 = V::loadu(w), w1 = V::loadu(w + U), w2 = V::loadu(w + 2 * U),
            w3 = V::loadu(w + 3 * U);
#define LSTM_FUSED_BACK_ROW(r)                 \
  {                                            \
    const V zk(a[(r) * lda + k]);              \
    a##r##0 = at::vec::fmadd(zk, w0, a##r##0); \
    a##r##1 = at::vec::fmadd(zk, w1, a##r##1); \
    a##r##2 = at::vec::fmadd(zk, w2, a##r##2); \
    a##r##3 = at::vec::fmadd(zk, w3, a##r##3); \
  }
    LSTM_FUSED_BACK_ROW(0)
    if constexpr (MR > 1) LSTM_FUSED_BACK_ROW(1)
    if constexpr (MR > 2) LSTM_FUSED_BACK_ROW(2)
    if constexpr (MR > 3) LSTM_FUSED_BACK_ROW(3)
#undef LSTM_FUSED_BACK_ROW
  }
  acc[0][0] = a00, acc[0][1] = a01, acc[0][2] = a02, acc[0][3] = a03;
  acc[1][0] = a10, acc[1][1] = a11, acc[1][2] = a12, acc[1][3] = a13;
  acc[2][0] = a20, acc[2][1] = a21, acc[2][2] = a22, acc[2][3] = a23;
  acc[3][0] = a30, acc[3][1] = a31, acc[3][2] = a32, acc[3][3] = a33;
}

// Rows [r0, r0 + MR) times panel q of one step, the products of panel rows [k0, k1): where
// k1 < G their sums go to s.partial, and the cell backward runs once k1 == G (k0 > 0: the
// sums start from s.partial).
template <typename T, int MR>
inline void back_tile(const RecurrentBackStep<T>& s, int64_t q, int64_t r0, int64_t k0,
                      int64_t k1) {
  using V = at::vec::Vectorized<T>;
  const int64_t U = V::size(), W = 4 * U, H = s.H, G = 4 * H;
  const V zero(T(0));
  V acc[4][4];
  T* partial = s.partial + (q * s.B + r0) * W;  // (n_panels, B, W): this tile's rows
  if (k1 == G) {
    // The cell backward reads the saved gates and cells of these rows and units, which the
    // step has not touched yet (saved by the forward, most likely in DRAM): start those loads
    // now so that they have arrived when the product is done.
    const int64_t u0 = q * W, n = std::min(W, H - u0) * static_cast<int64_t>(sizeof(T));
    for (int r = 0; r < MR; ++r)
      for (int64_t off = 0; off < n; off += 64) {
        const char* g = reinterpret_cast<const char*>(s.gates + (r0 + r) * G + u0) + off;
        for (int gate = 0; gate < 4; ++gate) __builtin_prefetch(g + gate * H * sizeof(T));
        __builtin_prefetch(reinterpret_cast<const char*>(s.c + (r0 + r) * H + u0) + off);
        __builtin_prefetch(reinterpret_cast<const char*>(s.c_prev + (r0 + r) * H + u0) + off);
        __builtin_prefetch(reinterpret_cast<const char*>(s.gy + (r0 + r) * s.gy_stride + u0) + off);
      }
  }
  if (s.dz_next != nullptr)
    panel_product<T, MR>(s.dz_next + r0 * G, G, s.panels + q * G * W, k0, k1,
                         k0 > 0 ? partial : nullptr, W, acc);
  if (k1 < G) {  // a block of the sum: kept for the next
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < 4; ++v) acc[r][v].store(partial + r * W + v * U);
    return;
  }

  const int64_t u_end = std::min(H, q * W + W);
  for (int r = 0; r < MR; ++r) {
    const int64_t b = r0 + r;
    const bool from_next = s.dz_next != nullptr && s.t_next < s.len[b];
    const bool valid = s.t < s.len[b];
    for (int v = 0; v < 4; ++v) {
      const int64_t u = q * W + v * U;
      if (u >= u_end) break;
      const int cnt = static_cast<int>(std::min(U, u_end - u));
      T* carry = s.dh_carry + b * H + u;
      V dh_in = from_next ? acc[r][v] : V::loadu(carry, cnt);
      if (s.reset_next != nullptr && s.reset_next[b]) {  // the next step started from h0, c0
        T* dh0 = s.dh0_sum + b * H + u;
        T* dc0 = s.dc0_sum + b * H + u;
        T* dc = s.dc + b * H + u;
        (V::loadu(dh0, cnt) + dh_in).store(dh0, cnt);
        (V::loadu(dc0, cnt) + V::loadu(dc, cnt)).store(dc0, cnt);
        zero.store(dc, cnt);
        dh_in = zero;
      }
      T* dz_row = s.dz + b * G + u;
      if (!valid) {  // padding: the gradient passes through, no gate gradient
        dh_in.store(carry, cnt);
        for (int g = 0; g < 4; ++g) std::memset(dz_row + g * H, 0, cnt * sizeof(T));
        continue;
      }
      alignas(64) T dh[V::size()];
      (dh_in + V::loadu(s.gy + b * s.gy_stride + u, cnt)).store(dh, cnt);
      const T* c_prev = s.reset != nullptr && s.reset[b] ? s.c0 + b * H + u : s.c_prev + b * H + u;
      cell_backward_units<T>(s.gates + b * G + u, H, s.c + b * H + u, c_prev,
                             s.peep != nullptr ? s.peep + u : nullptr, H, dh, s.dc + b * H + u,
                             dz_row, H, cnt);
    }
  }
}

// out (M, N), row stride ldo, (+)= dz (M, G) W for W (G, N) packed by pack_recurrent_t
// (panels (ceil(N / 4U), G, 4U)): the backward's grad_x = dZ W_ih over all steps' rows (M =
// T * B), in the tiles of the reverse time loop. accumulate: add to out (the second direction).
// Threads split the rows; each element is summed in the same order whatever the threads.
template <typename T>
void input_grad(T* out, int64_t ldo, const T* dz, int64_t ldz, const T* panels, int64_t M,
                int64_t G, int64_t N, bool accumulate) {
  using V = at::vec::Vectorized<T>;
  const int64_t U = V::size(), W = 4 * U, n_panels = (N + W - 1) / W;
  // Rows per block: the block's rows of dz over kBackKBlock columns (128 KB of float) stay in
  // L2 while every panel's block (in L1) passes over them.
  constexpr int64_t kRowBlock = 256;
  at::parallel_for(
      0, (M + kTileRows - 1) / kTileRows, kRowBlock / kTileRows, [&](int64_t t0, int64_t t1) {
        for (int64_t m0 = t0 * kTileRows; m0 < std::min(M, t1 * kTileRows); m0 += kRowBlock) {
          const int64_t m1 = std::min({M, t1 * kTileRows, m0 + kRowBlock});
          for (int64_t k0 = 0; k0 < G; k0 += kBackKBlock) {
            const int64_t k1 = std::min(G, k0 + kBackKBlock);
            const bool from_out = accumulate || k0 > 0;
            for_each_tile(0, n_panels, m0, m1, [&](auto mr, int64_t q, int64_t r0) {
              constexpr int MR = decltype(mr)::value;
              const int64_t u0 = q * W;
              T* o = out + r0 * ldo + u0;
              V acc[4][4];
              if (u0 + W <= N) {
                panel_product<T, MR>(dz + r0 * ldz, ldz, panels + q * G * W, k0, k1,
                                     from_out ? o : nullptr, ldo, acc);
                for (int r = 0; r < MR; ++r)
                  for (int v = 0; v < 4; ++v) acc[r][v].store(o + r * ldo + v * U);
                return;
              }
              // The last panel, past N: through a buffer of whole vectors.
              alignas(64) T buf[4 * 4 * V::size()];
              for (int r = 0; r < MR; ++r) {
                std::fill(buf + r * W, buf + (r + 1) * W, T(0));
                if (from_out) std::copy(o + r * ldo, o + r * ldo + (N - u0), buf + r * W);
              }
              panel_product<T, MR>(dz + r0 * ldz, ldz, panels + q * G * W, k0, k1, buf, W, acc);
              for (int r = 0; r < MR; ++r) {
                for (int v = 0; v < 4; ++v) acc[r][v].store(buf + r * W + v * U);
                std::copy(buf + r * W, buf + r * W + (N - u0), o + r * ldo);
              }
            });
          }
        }
      });
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
