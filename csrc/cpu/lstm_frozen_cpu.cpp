// C++ CPU kernel of lstm_fused::lstm_frozen_layer: one direction of one LSTM layer in
// inference, with its weights packed once (csrc/lstm_frozen_args.h) as float32, bfloat16, or
// int8 with per-row scales (docs/contract.md, "Frozen inference").
//
// First the input projections of all T * B rows (the same panel products as the loop, bias
// added), then the time loop (parallel_time_loop.h: panels of every step shared out, or the
// batch rows once where B is large enough). Each step prepares h_{t-1} for the products (a
// copy; bfloat16 rounding; int8: a scale per row, max |h| / 127, and rounding to the nearest
// integer), then per panel and tile of rows the products of frozen_dot.h and the gate math on
// them (lstm_cell_vec.h). The threads prepare the rows they read themselves, each into its own
// buffer, so a step has one barrier, as the float32 loops of lstm_layer_cpu.cpp.
#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/frozen_dot.h"
#include "cpu/kernels.h"
#include "cpu/parallel_time_loop.h"
#include "lstm_frozen_args.h"
#include "lstm_layer_args.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h
namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;
constexpr int U = kFrozenU;

inline uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Rows of int8 activations whose largest |value| is below this are taken as zeros (their
// products are below 1e-30 |w|); reference_frozen.TINY_ROW.
constexpr float kTinyRow = 1e-30f;

// One row of n float32 values as Kq dot steps of `Kind` (zero past n) into dst; int8: its
// scale and the sum of its int8 values. A row with inf or NaN gets a NaN scale (its products
// are NaN, as in float32).
template <FrozenKind Kind>
void prepare_row(const float* src, int64_t n, int64_t Kq, uint32_t* dst, float* scale,
                 int32_t* sum) {
  if constexpr (Kind == FrozenKind::F32) {
    std::memcpy(dst, src, n * 4);
    std::memset(dst + n, 0, (Kq - n) * 4);
  } else if constexpr (Kind == FrozenKind::BF16) {
    uint16_t* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t j = 0; j < n; ++j) d[j] = float_to_bf16(src[j]);
    for (int64_t j = n; j < 2 * Kq; ++j) d[j] = 0;
  } else {
    float amax = 0.f;
    bool nan = false;  // std::max drops a NaN operand: counted apart
    for (int64_t j = 0; j < n; ++j) {
      const float a = std::fabs(src[j]);
      nan |= std::isnan(a);
      amax = std::max(amax, a);
    }
    int8_t* d = reinterpret_cast<int8_t*>(dst);
    std::memset(d, 0, Kq * 4);
    if (nan || !(amax <= 3.4e38f)) {  // inf or NaN in the row
      *scale = std::numeric_limits<float>::quiet_NaN();
      *sum = 0;
      return;
    }
    if (amax < kTinyRow) {  // zero, or so small that 127 / amax would overflow
      *scale = 0.f;
      *sum = 0;
      return;
    }
    const float inv = 127.f / amax;
    int32_t s = 0;
    for (int64_t j = 0; j < n; ++j) {
      const int32_t v =
          static_cast<int32_t>(std::min(127.f, std::max(-127.f, std::nearbyint(src[j] * inv))));
      d[j] = static_cast<int8_t>(v);
      s += v;
    }
    *scale = amax / 127.f;
    *sum = s;
  }
}

// The activations of `rows` rows (row stride `stride` floats, n values each), prepared.
struct Prepared {
  std::vector<uint32_t> a;  // rows x Kq
  std::vector<float> scale;
  std::vector<int32_t> sum;
  int64_t Kq = 0;
  void resize(int64_t rows, int64_t kq) {
    Kq = kq;
    a.resize(std::max<int64_t>(1, rows * kq));
    scale.resize(std::max<int64_t>(1, rows));
    sum.resize(std::max<int64_t>(1, rows));
  }
  template <FrozenKind Kind>
  void prepare(int64_t row, const float* src, int64_t n) {
    prepare_row<Kind>(src, n, Kq, a.data() + row * Kq, scale.data() + row, sum.data() + row);
  }
  FrozenRows tile(int64_t r0, int mr) const {
    FrozenRows t{};
    for (int r = 0; r < mr; ++r) {
      t.a[r] = a.data() + (r0 + r) * Kq;
      t.scale[r] = scale[r0 + r];
      t.sum[r] = sum[r0 + r];
    }
    return t;
  }
};

// Calls f(integral_constant<int, MR>, r0) for rows [b0, b1) in tiles of up to
// kFrozenTileRows (frozen_dot.h).
template <typename F>
inline void for_each_row_tile(int64_t b0, int64_t b1, F&& f) {
  static_assert(kFrozenTileRows == 6, "the cases below");
  int64_t r0 = b0;
  for (; r0 + 6 <= b1; r0 += 6) f(std::integral_constant<int, 6>{}, r0);
  switch (b1 - r0) {
    case 5:
      f(std::integral_constant<int, 5>{}, r0);
      break;
    case 4:
      f(std::integral_constant<int, 4>{}, r0);
      break;
    case 3:
      f(std::integral_constant<int, 3>{}, r0);
      break;
    case 2:
      f(std::integral_constant<int, 2>{}, r0);
      break;
    case 1:
      f(std::integral_constant<int, 1>{}, r0);
      break;
    default:
      break;
  }
}

template <FrozenKind Kind>
std::tuple<Tensor, Tensor, Tensor> frozen_layer(const FrozenSizes& s, const Tensor& x,
                                                const Tensor& h0, const Tensor& c0,
                                                const Tensor& w_ih, const Tensor& w_hh,
                                                const Tensor& bias, const OptTensor& w_ih_scale,
                                                const OptTensor& w_hh_scale) {
  using V = at::vec::Vectorized<float>;
  const int64_t T = s.T, B = s.B, I = s.I, H = s.H, P = s.P, q = s.q;
  const int64_t Kx = (I + q - 1) / q, Kh = (H + q - 1) / q;
  const auto opts = x.options();
  Tensor y = new_output({T, B, H}, opts);
  Tensor h_n = new_output({B, H}, opts);
  Tensor c_n = c0.contiguous().clone();  // the cell state lives here
  const bool native = frozen_native(Kind);
  const Tensor x_c = x.contiguous(), h0_c = h0.contiguous();
  const Tensor wi_c = w_ih.contiguous(), wh_c = w_hh.contiguous(), bias_c = bias.contiguous();
  const Tensor si_c = Kind == FrozenKind::I8 ? w_ih_scale->contiguous() : Tensor();
  const Tensor sh_c = Kind == FrozenKind::I8 ? w_hh_scale->contiguous() : Tensor();
  const uint8_t* wi = static_cast<const uint8_t*>(wi_c.data_ptr());
  const uint8_t* wh = static_cast<const uint8_t*>(wh_c.data_ptr());
  const float* bias_p = bias_c.data_ptr<float>();
  const float* si = Kind == FrozenKind::I8 ? si_c.data_ptr<float>() : nullptr;
  const float* sh = Kind == FrozenKind::I8 ? sh_c.data_ptr<float>() : nullptr;
  const int64_t panel_x = Kx * 256, panel_h = Kh * 256;  // bytes of one panel

  // Input projections of every (t, b) row: gx (T * B, P, 4, U), bias included.
  const int64_t M = T * B;
  Tensor gx = at::empty({std::max<int64_t>(M, 1), P, 4, U}, opts);
  float* gx_p = gx.data_ptr<float>();
  {
    Prepared xs;
    xs.resize(M, Kx);
    const float* x_p = x_c.data_ptr<float>();
    at::parallel_for(0, M, 64, [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) xs.prepare<Kind>(m, x_p + m * I, I);
    });
    constexpr int64_t MT = kFrozenTileRows;
    const int64_t row_tiles = (M + MT - 1) / MT;
    at::parallel_for(0, P * row_tiles, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t p = i / row_tiles, r0 = (i % row_tiles) * MT;
        for_each_row_tile(r0, std::min(M, r0 + MT), [&](auto mr, int64_t r) {
          constexpr int MR = decltype(mr)::value;
          float z[MR][4][U];
          frozen_panel<Kind, MR>(wi + p * panel_x, Kx, xs.tile(r, MR),
                                 si != nullptr ? si + p * 4 * U : nullptr, native, z);
          for (int j = 0; j < MR; ++j) {
            float* out = gx_p + ((r + j) * P + p) * 4 * U;
            const float* b = bias_p + p * 4 * U;
            for (int g = 0; g < 4; ++g)
              for (int u = 0; u < U; ++u) out[g * U + u] = z[j][g][u] + b[g * U + u];
          }
        });
      }
    });
  }

  // The time loop. h double-buffered: step s reads h_bufs[s % 2] and writes the other.
  Tensor h_bufs = at::empty({2, B, H}, opts);
  h_bufs.select(0, 0).copy_(h0_c);
  float* const h_p = h_bufs.data_ptr<float>();
  float* const c_p = c_n.data_ptr<float>();
  float* const y_p = y.data_ptr<float>();
  // Each thread's prepared h rows (threads of this process at most).
  const int64_t max_threads = std::max<int64_t>(1, at::get_num_threads());
  std::vector<Prepared> hs(max_threads);
  for (Prepared& p : hs) p.resize(B, Kh);
  const bool parallel = B * 4 * H * H >= (int64_t(1) << 18) && P > 1;
  parallel_tile_loop(
      T, P, B, parallel, [&](int64_t step, int64_t p0, int64_t p1, int64_t b0, int64_t b1) {
#ifdef _OPENMP
        Prepared& hp = hs[std::min<int64_t>(omp_get_thread_num(), max_threads - 1)];
#else
    Prepared& hp = hs[0];
#endif
        const float* h_prev = h_p + (step % 2) * B * H;
        float* h_next = h_p + ((step + 1) % 2) * B * H;
        for (int64_t b = b0; b < b1; ++b) hp.prepare<Kind>(b, h_prev + b * H, H);
        // The panels in turn forwards, then backwards on the next step: the panels read last are
        // read first again, still in cache. A weight as large as a core's cache (W_hh in float32,
        // H = 256: 1 MiB) read front to back every step misses on every line under LRU.
        const bool backwards = step % 2 == 1;
        for (int64_t i = p0; i < p1; ++i) {
          const int64_t p = backwards ? p1 - 1 - (i - p0) : i;
          const int64_t u0 = p * U;
          const int cnt = static_cast<int>(std::min<int64_t>(U, H - u0));
          for_each_row_tile(b0, b1, [&](auto mr, int64_t r0) {
            constexpr int MR = decltype(mr)::value;
            float z[MR][4][U];
            frozen_panel<Kind, MR>(wh + p * panel_h, Kh, hp.tile(r0, MR),
                                   sh != nullptr ? sh + p * 4 * U : nullptr, native, z);
            for (int j = 0; j < MR; ++j) {
              const int64_t b = r0 + j;
              const float* zin = gx_p + ((step * B + b) * P + p) * 4 * U;
              float* c_row = c_p + b * H + u0;
              for (int u = 0; u < cnt; u += V::size()) {
                const int n = std::min<int>(V::size(), cnt - u);
                const V zi = V::loadu(z[j][0] + u) + V::loadu(zin + u);
                const V zf = V::loadu(z[j][1] + u) + V::loadu(zin + U + u);
                const V zg = V::loadu(z[j][2] + u) + V::loadu(zin + 2 * U + u);
                const V zo = V::loadu(z[j][3] + u) + V::loadu(zin + 3 * U + u);
                const V cp = V::loadu(c_row + u, n);
                const V cn = at::vec::fmadd(vsigmoid(zf), cp, vsigmoid(zi) * vtanh(zg));
                const V hn = vsigmoid(zo) * vtanh(cn);
                cn.store(c_row + u, n);
                hn.store(h_next + b * H + u0 + u, n);
                hn.store(y_p + (step * B + b) * H + u0 + u, n);
              }
            }
          });
        }
      });
  h_n.copy_(h_bufs.select(0, T % 2));
  return {y, h_n, c_n};
}

std::tuple<Tensor, Tensor, Tensor> lstm_frozen_layer_cpu(const Tensor& x, const Tensor& h0,
                                                         const Tensor& c0, const Tensor& w_ih,
                                                         const Tensor& w_hh, const Tensor& bias,
                                                         const OptTensor& w_ih_scale,
                                                         const OptTensor& w_hh_scale) {
  const OneThreadIfBusy threads;  // parallel_time_loop.h
  const FrozenSizes s =
      check_frozen_args(x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale, at::kCPU);
  switch (s.q) {
    case 1:
      return frozen_layer<FrozenKind::F32>(s, x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale);
    case 2:
      return frozen_layer<FrozenKind::BF16>(s, x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale);
    default:
      return frozen_layer<FrozenKind::I8>(s, x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale);
  }
}

}  // namespace

// This variant's entries (kernels.h); registered for the CPU by dispatch.cpp.
extern const LstmFrozenKernels lstm_frozen_kernels{&lstm_frozen_layer_cpu};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
