// The products of lstm_frozen_layer (lstm_frozen_cpu.cpp): MR rows of activations times one
// panel of packed weights (csrc/lstm_frozen_args.h), K_q dot steps, giving z for the panel's
// 4 gates x U = 16 units of each row, in float32.
//
// Every dot step reads 4 bytes of activations per row (one float32, a bfloat16 pair or an int8
// quad) and 64 bytes of weights per gate (16 lanes x the same), so one kernel shape serves the
// three weight types:
//   float32   z += a * w                                    (FMA)
//   bfloat16  z += a0 w0 + a1 w1, products exact in float32  (AVX512_BF16: vdpbf16ps)
//   int8      acc += a0 w0 + ... + a3 w3 in int32 (exact), w stored as w + 128 (unsigned, as
//             VNNI's vpdpbusd takes its first operand), so acc - 128 sum(a) is the product;
//             z = that * (row scale * weight row scale)            (AVX512_VNNI: vpdpbusd)
// The native instructions are compiled per function (target attribute) in the AVX-512 variant
// and run only where the CPU has them (frozen_native); elsewhere the portable loops below give
// the same products (int8: the same integers; bfloat16: the same exact products, summed in
// another order).
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set

#include <cstdint>
#include <cstring>

#if defined(CPU_CAPABILITY_AVX512)
#include <immintrin.h>
#endif

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

enum class FrozenKind { F32, BF16, I8 };
constexpr int kFrozenU = 16;

// Rows of a tile, at most: 6 rows x 4 gates = 24 accumulators, plus the 4 weight vectors and
// a broadcast, within AVX-512's 32 vector registers.
constexpr int kFrozenTileRows = 6;

// Per row of a tile: its activations (K_q 32-bit dot steps), and for int8 its scale and the
// sum of its int8 values.
struct FrozenRows {
  const uint32_t* a[kFrozenTileRows];
  float scale[kFrozenTileRows];
  int32_t sum[kFrozenTileRows];
};

inline float bf16_to_float(uint16_t v) {
  const uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// z[r][g][u] of rows r < MR, the portable way. w: the panel, K_q x 4 x 64 bytes.
template <FrozenKind Kind, int MR>
inline void frozen_panel_portable(const uint8_t* w, int64_t Kq, const FrozenRows& rows,
                                  const float* w_scale, float z[][4][kFrozenU]) {
  if constexpr (Kind == FrozenKind::I8) {
    int32_t acc[MR][4][kFrozenU] = {};
    for (int64_t k = 0; k < Kq; ++k, w += 256)
      for (int r = 0; r < MR; ++r) {
        int8_t a[4];
        std::memcpy(a, rows.a[r] + k, 4);
        for (int g = 0; g < 4; ++g)
          for (int u = 0; u < kFrozenU; ++u) {
            const uint8_t* wv = w + g * 64 + u * 4;
            acc[r][g][u] += int32_t(wv[0]) * a[0] + int32_t(wv[1]) * a[1] + int32_t(wv[2]) * a[2] +
                            int32_t(wv[3]) * a[3];
          }
      }
    for (int r = 0; r < MR; ++r)
      for (int g = 0; g < 4; ++g)
        for (int u = 0; u < kFrozenU; ++u)
          z[r][g][u] =
              float(acc[r][g][u] - 128 * rows.sum[r]) * (rows.scale[r] * w_scale[g * kFrozenU + u]);
  } else {
    for (int r = 0; r < MR; ++r)
      for (int g = 0; g < 4; ++g)
        for (int u = 0; u < kFrozenU; ++u) z[r][g][u] = 0.f;
    for (int64_t k = 0; k < Kq; ++k, w += 256)
      for (int r = 0; r < MR; ++r) {
        if constexpr (Kind == FrozenKind::F32) {
          float a;
          std::memcpy(&a, rows.a[r] + k, 4);
          const float* wf = reinterpret_cast<const float*>(w);
          for (int g = 0; g < 4; ++g)
            for (int u = 0; u < kFrozenU; ++u) z[r][g][u] += a * wf[g * kFrozenU + u];
        } else {
          uint16_t a[2];
          std::memcpy(a, rows.a[r] + k, 4);
          const float a0 = bf16_to_float(a[0]), a1 = bf16_to_float(a[1]);
          const uint16_t* wb = reinterpret_cast<const uint16_t*>(w);
          for (int g = 0; g < 4; ++g)
            for (int u = 0; u < kFrozenU; ++u) {
              const uint16_t* wv = wb + (g * kFrozenU + u) * 2;
              z[r][g][u] += a0 * bf16_to_float(wv[0]) + a1 * bf16_to_float(wv[1]);
            }
        }
      }
  }
}

#if defined(CPU_CAPABILITY_AVX512)

// The native kernels: MR rows x 4 gates of 16-lane accumulators. With one row, two sets of
// accumulators (even and odd dot steps) so that 8 independent chains hide the instruction's
// latency.
#define LSTM_FUSED_FROZEN_NATIVE(NAME, TARGET, ACC, ZERO, DOT)                                    \
  template <int MR>                                                                               \
  __attribute__((target(TARGET))) void NAME(const uint8_t* w, int64_t Kq, const FrozenRows& rows, \
                                            ACC out[][4]) {                                       \
    constexpr int SETS = MR == 1 ? 2 : 1;                                                         \
    ACC acc[SETS][MR][4];                                                                         \
    _Pragma("GCC unroll 8") for (int s = 0; s < SETS; ++s)                                        \
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; ++r)                                      \
            _Pragma("GCC unroll 4") for (int g = 0; g < 4; ++g) acc[s][r][g] = ZERO;              \
    int64_t k = 0;                                                                                \
    for (; k + SETS <= Kq; k += SETS) {                                                           \
      _Pragma("GCC unroll 2") for (int s = 0; s < SETS; ++s) {                                    \
        const uint8_t* wk = w + (k + s) * 256;                                                    \
        const __m512i w0 = _mm512_loadu_si512(wk), w1 = _mm512_loadu_si512(wk + 64),              \
                      w2 = _mm512_loadu_si512(wk + 128), w3 = _mm512_loadu_si512(wk + 192);       \
        _Pragma("GCC unroll 6") for (int r = 0; r < MR; ++r) {                                    \
          const __m512i a = _mm512_set1_epi32(static_cast<int>(rows.a[r][k + s]));                \
          acc[s][r][0] = DOT(acc[s][r][0], w0, a);                                                \
          acc[s][r][1] = DOT(acc[s][r][1], w1, a);                                                \
          acc[s][r][2] = DOT(acc[s][r][2], w2, a);                                                \
          acc[s][r][3] = DOT(acc[s][r][3], w3, a);                                                \
        }                                                                                         \
      }                                                                                           \
    }                                                                                             \
    for (; k < Kq; ++k) {                                                                         \
      const uint8_t* wk = w + k * 256;                                                            \
      const __m512i w0 = _mm512_loadu_si512(wk), w1 = _mm512_loadu_si512(wk + 64),                \
                    w2 = _mm512_loadu_si512(wk + 128), w3 = _mm512_loadu_si512(wk + 192);         \
      _Pragma("GCC unroll 6") for (int r = 0; r < MR; ++r) {                                      \
        const __m512i a = _mm512_set1_epi32(static_cast<int>(rows.a[r][k]));                      \
        acc[0][r][0] = DOT(acc[0][r][0], w0, a);                                                  \
        acc[0][r][1] = DOT(acc[0][r][1], w1, a);                                                  \
        acc[0][r][2] = DOT(acc[0][r][2], w2, a);                                                  \
        acc[0][r][3] = DOT(acc[0][r][3], w3, a);                                                  \
      }                                                                                           \
    }                                                                                             \
    _Pragma("GCC unroll 6") for (int r = 0; r < MR; ++r)                                          \
        _Pragma("GCC unroll 4") for (int g = 0; g < 4; ++g) {                                     \
      out[r][g] = acc[0][r][g];                                                                   \
      if constexpr (SETS == 2) out[r][g] = ADD_##NAME(out[r][g], acc[1][r][g]);                   \
    }                                                                                             \
  }

#define ADD_frozen_f32_native(a, b) _mm512_add_ps(a, b)
#define ADD_frozen_bf16_native(a, b) _mm512_add_ps(a, b)
#define ADD_frozen_i8_native(a, b) _mm512_add_epi32(a, b)
#define LSTM_FUSED_DOT_F32(acc, w, a) \
  _mm512_fmadd_ps(_mm512_castsi512_ps(w), _mm512_castsi512_ps(a), acc)
#define LSTM_FUSED_DOT_BF16(acc, w, a) _mm512_dpbf16_ps(acc, (__m512bh)(w), (__m512bh)(a))
#define LSTM_FUSED_DOT_I8(acc, w, a) _mm512_dpbusd_epi32(acc, w, a)

LSTM_FUSED_FROZEN_NATIVE(frozen_f32_native, "avx512f", __m512, _mm512_setzero_ps(),
                         LSTM_FUSED_DOT_F32)
LSTM_FUSED_FROZEN_NATIVE(frozen_bf16_native, "avx512f,avx512bf16", __m512, _mm512_setzero_ps(),
                         LSTM_FUSED_DOT_BF16)
LSTM_FUSED_FROZEN_NATIVE(frozen_i8_native, "avx512f,avx512vnni", __m512i, _mm512_setzero_si512(),
                         LSTM_FUSED_DOT_I8)
#undef LSTM_FUSED_FROZEN_NATIVE
#undef LSTM_FUSED_DOT_F32
#undef LSTM_FUSED_DOT_BF16
#undef LSTM_FUSED_DOT_I8
#undef ADD_frozen_f32_native
#undef ADD_frozen_bf16_native
#undef ADD_frozen_i8_native

// Whether this CPU runs the native kernel of a kind (asked once).
inline bool frozen_native(FrozenKind kind) {
  static const bool bf16 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  static const bool vnni = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") != 0;
  }();
  switch (kind) {
    case FrozenKind::F32:
      return true;  // this variant runs only where AVX-512 F is (dispatch.cpp)
    case FrozenKind::BF16:
      return bf16;
    case FrozenKind::I8:
      return vnni;
  }
  return false;
}

#else
inline bool frozen_native(FrozenKind) { return false; }
#endif

// z (MR x 4 x U floats) of rows.a[0..MR) times the panel w; w_scale: the panel's (4, U) weight
// row scales (int8 only). native: frozen_native(Kind), asked once per call by the caller.
template <FrozenKind Kind, int MR>
inline void frozen_panel(const uint8_t* w, int64_t Kq, const FrozenRows& rows, const float* w_scale,
                         bool native, float z[][4][kFrozenU]) {
#if defined(CPU_CAPABILITY_AVX512)
  if (native) {
    if constexpr (Kind == FrozenKind::I8) {
      __m512i acc[MR][4];
      frozen_i8_native<MR>(w, Kq, rows, acc);
      for (int r = 0; r < MR; ++r) {
        const __m512 rs = _mm512_set1_ps(rows.scale[r]);
        const __m512i corr = _mm512_set1_epi32(128 * rows.sum[r]);
        for (int g = 0; g < 4; ++g) {
          const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[r][g], corr));
          const __m512 sc = _mm512_mul_ps(rs, _mm512_loadu_ps(w_scale + g * kFrozenU));
          _mm512_storeu_ps(z[r][g], _mm512_mul_ps(v, sc));
        }
      }
    } else {
      __m512 acc[MR][4];
      if constexpr (Kind == FrozenKind::F32) frozen_f32_native<MR>(w, Kq, rows, acc);
      else frozen_bf16_native<MR>(w, Kq, rows, acc);
      for (int r = 0; r < MR; ++r)
        for (int g = 0; g < 4; ++g) _mm512_storeu_ps(z[r][g], acc[r][g]);
    }
    return;
  }
#endif
  (void)native;
  frozen_panel_portable<Kind, MR>(w, Kq, rows, w_scale, z);
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
