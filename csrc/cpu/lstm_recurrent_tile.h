// The recurrent product of one LSTM step fused with its gate math, for the CPU (at::vec).
//
// z = h_{t-1} W_hh^T + gx_t is computed tile by tile, a tile being MR batch rows times U hidden
// units (U = one vector) of all four gates, accumulated in 4 * MR vector registers; the gate
// math then runs on those registers, so z never goes to memory, and there is no GEMM library
// call (with its per-call setup) inside the time loop. Dimension letters as in
// lstm_layer_args.h; U = Vectorized<T>::size() (16 floats / 8 doubles with AVX-512).
//
// The input projection can be fused in too: z = [x_t, h_{t-1}] [W_ih, W_hh]^T + b, one
// product with K = I + R. Then the layer never writes the (T, B, G) input projection to memory
// and reads it back a step at a time, which costs more than the GEMM library saves over these
// tiles once there are enough batch rows to reuse each panel (see lstm_layer_cpu.cpp).
//
// The weights of one direction are packed once per call into panels of U units
// (pack_recurrent): panel p holds, for each k in [0, K), the weights of units [pU, pU + U) of
// gate i, then f, g, o: K * 4 * U contiguous values, read front to back by the tile loop (four
// vector loads per k, each multiplied by MR broadcast values of x or h). Units past H are
// zero. K = R, or I + R with the input fused (rows k < I from W_ih).
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

// Batch rows of a tile: 4 rows x 4 gates = 16 accumulators, which leaves registers for the
// four weight vectors and the broadcasts (AVX-512 and AVX2 both have 16+ vector registers).
constexpr int kTileRows = 4;

template <typename T>
inline int64_t panel_units() {
  return at::vec::Vectorized<T>::size();
}

// Weights (G, K_j) contiguous, j = 0, 1, ... -> (ceil(H / U), K, 4, U) panels, K = sum K_j,
// rows k of the panels taken from the weights in order; zero-padded past H.
template <typename T>
at::Tensor pack_recurrent(std::initializer_list<at::Tensor> weights, int64_t H) {
  const int64_t U = panel_units<T>(), n_panels = (H + U - 1) / U;
  int64_t K = 0;
  for (const at::Tensor& w : weights) K += w.size(1);
  // Zero-filled only when the last panel has lanes past H.
  at::Tensor packed = H % U == 0 ? at::empty({n_panels, K, 4, U}, weights.begin()->options())
                                 : at::zeros({n_panels, K, 4, U}, weights.begin()->options());
  T* dst = packed.data_ptr<T>();
  // Per panel and gate, a transpose of the (nu, K_j) block of W into (K_j, U) with row stride
  // 4 U, in 16 x 16 pieces (in registers for float with AVX-512).
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 17) / (K * 4 * U));  // 512 KB float
  at::parallel_for(0, n_panels, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t u0 = p * U, nu = std::min(U, H - u0);
      int64_t k_at = 0;  // first panel row of this weight
      for (const at::Tensor& w : weights) {
        const T* src = w.data_ptr<T>();
        const int64_t Kj = w.size(1);
        for (int64_t g = 0; g < 4; ++g)
          for (int64_t k0 = 0; k0 < Kj; k0 += 16)
            at::vec::transpose_mxn<T>(
                src + (g * H + u0) * Kj + k0, Kj, dst + (p * K + k_at + k0) * 4 * U + g * U, 4 * U,
                static_cast<int>(nu), static_cast<int>(std::min<int64_t>(16, Kj - k0)));
        k_at += Kj;
      }
    }
  });
  return packed;
}

// Everything one step of one direction reads and writes. Row b of a (B, .) operand starts at
// b * its stride; `units` pointers are offset to the direction already.
template <typename T>
struct RecurrentStep {
  const T* panels;    // pack_recurrent of W_hh, or of W_ih and W_hh when x is given
  const T* x;         // (B, I) x_t, row stride I, when the input projection is fused; or nullptr
  int64_t I;          // 0 when x is nullptr
  const T* h_prev;    // (B, R), row stride R
  bool h_prev_zero;   // h_prev is all zeros (h0 not given): its product is skipped
  const T* z_in;      // (B, G) input projection + bias of the step, row stride in_stride;
  int64_t in_stride;  // with x: the bias (G), in_stride 0
  const T* peep;      // (3, H) w_ci, w_cf, w_co, or nullptr
  T* c;               // (B, H): c_{t-1} in, c_t out
  T* h_next;          // (B, R): h_t (h_{t-1} where a row is past its length)
  T* y;               // (B, .) row stride y_stride: h_t, zero past the length
  int64_t y_stride;
  T* gates;            // (B, G) activated gates, or nullptr (inference)
  T* cells;            // (B, H) c_t, or nullptr (inference)
  const int64_t* len;  // (B) valid steps per row
  int64_t t, H, R;
  // Resets (lstm_layer_args.h): rows b with reset_next[b] start the next step from
  // (h0[b], c0[b]), written here as h_next and c; nullptr: none.
  const uint8_t* reset_next;
  const T* h0;  // (B, R)
  const T* c0;  // (B, H)
};

// Rows [r0, r0 + MR) times panel p of one step.
template <typename T, int MR>
inline void step_tile(const RecurrentStep<T>& s, int64_t p, int64_t r0) {
  using V = at::vec::Vectorized<T>;
  const int64_t U = V::size(), R = s.R, H = s.H, G = 4 * H;
  // Named accumulators, not an array: with an array indexed in the loop, GCC stores all of
  // them to the stack on every k (measured: a third of the FMA rate).
  const V zero(T(0));
  V a0i = zero, a0f = zero, a0g = zero, a0o = zero, a1i = zero, a1f = zero, a1g = zero, a1o = zero,
    a2i = zero, a2f = zero, a2g = zero, a2o = zero, a3i = zero, a3f = zero, a3g = zero, a3o = zero;
  // The epilogue reads the input projection of these rows and units, which the step has not
  // touched yet (it comes from the whole layer's GEMM, most likely from DRAM): start those
  // loads now so that they have arrived when the product is done. (With the input fused, z_in
  // is the bias, in_stride 0: the same few lines, already in cache.)
  for (int r = 0; r < MR; ++r)
    for (int g = 0; g < 4; ++g) __builtin_prefetch(s.z_in + (r0 + r) * s.in_stride + g * H + p * U);
  const int64_t K = s.I + R;
  const T* w = s.panels + p * K * 4 * U;
  // Adds the products of rows src[r * stride + k], k in [0, n), with the next n panel rows.
#define LSTM_FUSED_TILE_ROW(r)                  \
  {                                             \
    const V hk(src[(r) * stride + k]);          \
    a##r##i = at::vec::fmadd(hk, w_i, a##r##i); \
    a##r##f = at::vec::fmadd(hk, w_f, a##r##f); \
    a##r##g = at::vec::fmadd(hk, w_g, a##r##g); \
    a##r##o = at::vec::fmadd(hk, w_o, a##r##o); \
  }
#define LSTM_FUSED_TILE_SEGMENT(src_rows, row_stride, n)                           \
  {                                                                                \
    const T* src = (src_rows);                                                     \
    const int64_t stride = (row_stride);                                           \
    for (int64_t k = 0; k < (n); ++k, w += 4 * U) {                                \
      const V w_i = V::loadu(w), w_f = V::loadu(w + U), w_g = V::loadu(w + 2 * U), \
              w_o = V::loadu(w + 3 * U);                                           \
      LSTM_FUSED_TILE_ROW(0)                                                       \
      if constexpr (MR > 1) LSTM_FUSED_TILE_ROW(1)                                 \
      if constexpr (MR > 2) LSTM_FUSED_TILE_ROW(2)                                 \
      if constexpr (MR > 3) LSTM_FUSED_TILE_ROW(3)                                 \
    }                                                                              \
  }
  if (s.x != nullptr) LSTM_FUSED_TILE_SEGMENT(s.x + r0 * s.I, s.I, s.I)
  if (!s.h_prev_zero) LSTM_FUSED_TILE_SEGMENT(s.h_prev + r0 * R, R, R)
#undef LSTM_FUSED_TILE_SEGMENT
#undef LSTM_FUSED_TILE_ROW
  static_assert(MR >= 1 && MR <= 4, "a tile has 1 to 4 rows");
  const V acc[4][4] = {
      {a0i, a0f, a0g, a0o}, {a1i, a1f, a1g, a1o}, {a2i, a2f, a2g, a2o}, {a3i, a3f, a3g, a3o}};

  const int64_t u0 = p * U;
  const int cnt = static_cast<int>(std::min(U, H - u0));
  for (int r = 0; r < MR; ++r) {
    const int64_t b = r0 + r;
    T* c_row = s.c + b * H + u0;
    T* h_out = s.h_next + b * R + u0;
    T* y_row = s.y + b * s.y_stride + u0;
    T* g_row = s.gates != nullptr ? s.gates + b * G + u0 : nullptr;
    if (s.t >= s.len[b]) {  // past the length: state carried, output and gates zero
      std::memcpy(h_out, s.h_prev + b * R + u0, cnt * sizeof(T));
      std::memset(y_row, 0, cnt * sizeof(T));
      if (g_row != nullptr)
        for (int g = 0; g < 4; ++g) std::memset(g_row + g * H, 0, cnt * sizeof(T));
      if (s.cells != nullptr) std::memcpy(s.cells + b * H + u0, c_row, cnt * sizeof(T));
      continue;
    }
    const T* zin = s.z_in + b * s.in_stride + u0;
    V zi = acc[r][0] + V::loadu(zin, cnt), zf = acc[r][1] + V::loadu(zin + H, cnt);
    V zg = acc[r][2] + V::loadu(zin + 2 * H, cnt), zo = acc[r][3] + V::loadu(zin + 3 * H, cnt);
    const V cp = V::loadu(c_row, cnt);
    if (s.peep != nullptr) {
      zi = at::vec::fmadd(V::loadu(s.peep + u0, cnt), cp, zi);
      zf = at::vec::fmadd(V::loadu(s.peep + H + u0, cnt), cp, zf);
    }
    const V i = vsigmoid(zi), f = vsigmoid(zf), g = vtanh(zg);
    const V cn = at::vec::fmadd(f, cp, i * g);
    if (s.peep != nullptr) zo = at::vec::fmadd(V::loadu(s.peep + 2 * H + u0, cnt), cn, zo);
    const V o = vsigmoid(zo);
    const V hn = o * vtanh(cn);
    cn.store(c_row, cnt);
    hn.store(h_out, cnt);
    hn.store(y_row, cnt);
    if (g_row != nullptr) {
      i.store(g_row, cnt);
      f.store(g_row + H, cnt);
      g.store(g_row + 2 * H, cnt);
      o.store(g_row + 3 * H, cnt);
    }
    if (s.cells != nullptr) cn.store(s.cells + b * H + u0, cnt);
    if (s.reset_next != nullptr && s.reset_next[b]) {
      std::memcpy(h_out, s.h0 + b * R + u0, cnt * sizeof(T));
      std::memcpy(c_row, s.c0 + b * H + u0, cnt * sizeof(T));
    }
  }
}

// Calls tile(std::integral_constant<int, MR>{}, p, r0) for panels p in [p0, p1) and batch
// rows [b0, b1) in tiles of kTileRows rows, the last tile taking the 1 to 3 rows left. The
// panel loop of the forward tiles (step_tile) and of the backward tiles (back_tile).
template <typename Tile>
inline void for_each_tile(int64_t p0, int64_t p1, int64_t b0, int64_t b1, Tile&& tile) {
  for (int64_t p = p0; p < p1; ++p) {
    int64_t r0 = b0;
    for (; r0 + kTileRows <= b1; r0 += kTileRows)
      tile(std::integral_constant<int, kTileRows>{}, p, r0);
    switch (b1 - r0) {
      case 3:
        tile(std::integral_constant<int, 3>{}, p, r0);
        break;
      case 2:
        tile(std::integral_constant<int, 2>{}, p, r0);
        break;
      case 1:
        tile(std::integral_constant<int, 1>{}, p, r0);
        break;
      default:
        break;
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
