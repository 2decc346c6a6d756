// Vectorised LSTM cell math for the CPU (at::vec), forward and backward of one batch row.
//
// Compiled once per CPU capability (capability.h): ATen's AVX-512, AVX2 or portable Vectorized,
// in the namespace lstm_fused::cpu::CPU_CAPABILITY.
//
// Gate order i, f, g, o (PyTorch). Per element, with peephole weights w_ci, w_cf, w_co:
//   i = sigmoid(z_i + w_ci c_prev)   f = sigmoid(z_f + w_cf c_prev)   g = tanh(z_g)
//   c = f c_prev + i g               o = sigmoid(z_o + w_co c)         h = o tanh(c)
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

using at::vec::Vectorized;

// sigmoid(x) = 1 / (1 + exp(-x)) with ATen's fast exp (exp_u20: a degree-5 polynomial, about
// 1e-6 relative error for float; Sleef's exp for double). For very negative x, exp(-x) is huge
// (clamped to about FLT_MAX, or +inf), giving 0, never NaN. That clamp also turns a NaN
// argument into a finite one, so NaN lanes are passed through as they are: a NaN in the input
// or the state comes out as NaN, as in nn.LSTM, never as a plausible number.
template <typename T>
inline Vectorized<T> vsigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1));
  return Vectorized<T>::blendv(one / (one + x.neg().exp_u20()), x, x.isnan());
}

// tanh(x) = 2 sigmoid(2x) - 1: saturates to exactly -1 / +1, never inf / inf. The absolute error
// near 0 is one rounding of 1 (6e-8 in float), far below what the cell's other terms carry.
template <typename T>
inline Vectorized<T> vtanh(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1)), two(T(2));
  return two * vsigmoid(two * x) - one;
}

// Forward of n hidden units of one row. The pre-activations are z_in + z_rec, each laid out as
// four gate blocks (i, f, g, o) whose starts are in_stride / rec_stride elements apart; peep
// (three blocks w_ci, w_cf, w_co, peep_stride apart) may be nullptr; gates are written as four
// blocks gate_stride apart, or not at all when gates is nullptr (inference). c_prev, c, h: (n);
// c may be c_prev (updated in place).
template <typename T>
inline void cell_forward_units(const T* z_in, int64_t in_stride, const T* z_rec, int64_t rec_stride,
                               const T* c_prev, const T* peep, int64_t peep_stride, T* gates,
                               int64_t gate_stride, T* c, T* h, int64_t n_units) {
  using V = Vectorized<T>;
  const int64_t n = V::size();
  for (int64_t j = 0; j < n_units; j += n) {
    const int64_t cnt = std::min<int64_t>(n, n_units - j);
    V zi = V::loadu(z_in + j, cnt) + V::loadu(z_rec + j, cnt);
    V zf = V::loadu(z_in + in_stride + j, cnt) + V::loadu(z_rec + rec_stride + j, cnt);
    V zg = V::loadu(z_in + 2 * in_stride + j, cnt) + V::loadu(z_rec + 2 * rec_stride + j, cnt);
    V zo = V::loadu(z_in + 3 * in_stride + j, cnt) + V::loadu(z_rec + 3 * rec_stride + j, cnt);
    V cp = V::loadu(c_prev + j, cnt);
    if (peep != nullptr) {
      zi = at::vec::fmadd(V::loadu(peep + j, cnt), cp, zi);
      zf = at::vec::fmadd(V::loadu(peep + peep_stride + j, cnt), cp, zf);
    }
    V i = vsigmoid(zi), f = vsigmoid(zf), g = vtanh(zg);
    V cn = at::vec::fmadd(f, cp, i * g);
    if (peep != nullptr) zo = at::vec::fmadd(V::loadu(peep + 2 * peep_stride + j, cnt), cn, zo);
    V o = vsigmoid(zo);
    V hn = o * vtanh(cn);
    if (gates != nullptr) {
      i.store(gates + j, cnt);
      f.store(gates + gate_stride + j, cnt);
      g.store(gates + 2 * gate_stride + j, cnt);
      o.store(gates + 3 * gate_stride + j, cnt);
    }
    cn.store(c + j, cnt);
    hn.store(h + j, cnt);
  }
}

// A whole row: z_in, z_rec, gates (4H), c_prev, c, h (H), peep (3H) or nullptr.
template <typename T>
inline void cell_forward_row(const T* z_in, const T* z_rec, const T* c_prev, const T* peep,
                             T* gates, T* c, T* h, int64_t H) {
  cell_forward_units<T>(z_in, H, z_rec, H, c_prev, peep, H, gates, H, c, h, H);
}

// Backward of n units of one row. gates: four blocks (i, f, g, o; activated) gate_stride
// apart; c the cell after the step, c_prev the one before (n each); dh (n) gradient of
// h = o tanh(c) (before any projection); dc (n) gradient of c from the future, on return the
// gradient of c_prev; peep (three blocks peep_stride apart) or nullptr. Writes dz, the gradient
// of the pre-activations (the gradient of the peephole pre-activation terms is the same dz), as
// four blocks dz_stride apart.
template <typename T>
inline void cell_backward_units(const T* gates, int64_t gate_stride, const T* c, const T* c_prev,
                                const T* peep, int64_t peep_stride, const T* dh, T* dc, T* dz,
                                int64_t dz_stride, int64_t n_units) {
  using V = Vectorized<T>;
  const int64_t n = V::size();
  const V one(T(1));
  const int64_t gs = gate_stride, ps = peep_stride, zs = dz_stride;
  for (int64_t j = 0; j < n_units; j += n) {
    const int64_t cnt = std::min<int64_t>(n, n_units - j);
    V i = V::loadu(gates + j, cnt), f = V::loadu(gates + gs + j, cnt);
    V g = V::loadu(gates + 2 * gs + j, cnt), o = V::loadu(gates + 3 * gs + j, cnt);
    V ct = V::loadu(c + j, cnt), cp = V::loadu(c_prev + j, cnt);
    V dhv = V::loadu(dh + j, cnt), dcv = V::loadu(dc + j, cnt);
    V tc = vtanh(ct);
    V dzo = dhv * tc * o * (one - o);
    V dct = at::vec::fmadd(dhv * o, one - tc * tc, dcv);
    if (peep != nullptr) dct = at::vec::fmadd(dzo, V::loadu(peep + 2 * ps + j, cnt), dct);
    V dzi = dct * g * i * (one - i);
    V dzf = dct * cp * f * (one - f);
    V dzg = dct * i * (one - g * g);
    V dcp = dct * f;
    if (peep != nullptr) {
      dcp = at::vec::fmadd(dzi, V::loadu(peep + j, cnt), dcp);
      dcp = at::vec::fmadd(dzf, V::loadu(peep + ps + j, cnt), dcp);
    }
    dzi.store(dz + j, cnt);
    dzf.store(dz + zs + j, cnt);
    dzg.store(dz + 2 * zs + j, cnt);
    dzo.store(dz + 3 * zs + j, cnt);
    dcp.store(dc + j, cnt);
  }
}

// A whole row: gates, dz (4H); c, c_prev, dh, dc (H); peep (3H) or nullptr.
template <typename T>
inline void cell_backward_row(const T* gates, const T* c, const T* c_prev, const T* peep,
                              const T* dh, T* dc, T* dz, int64_t H) {
  cell_backward_units<T>(gates, H, c, c_prev, peep, H, dh, dc, dz, H, H);
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
