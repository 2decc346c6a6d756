// Vectorised LSTM cell math for the CPU (at::vec), forward and backward of one batch row.
//
// Built with AVX2+FMA when setup.py passes LSTM_FUSED_AVX2 (the extension then refuses to load
// on a CPU without them), otherwise with ATen's portable Vectorized. Include this header before
// any other ATen header in a translation unit so the capability macros below take effect.
//
// Gate order i, f, g, o (PyTorch). Per element, with peephole weights w_ci, w_cf, w_co:
//   i = sigmoid(z_i + w_ci c_prev)   f = sigmoid(z_f + w_cf c_prev)   g = tanh(z_g)
//   c = f c_prev + i g               o = sigmoid(z_o + w_co c)         h = o tanh(c)
#pragma once

#if defined(LSTM_FUSED_AVX2) && defined(__AVX2__) && defined(__FMA__)
#ifndef CPU_CAPABILITY_AVX2
#define CPU_CAPABILITY_AVX2
#endif
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY AVX2
#endif
#endif

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace lstm_fused {
namespace cpu {

using at::vec::Vectorized;

// sigmoid(x) = 1 / (1 + exp(-x)): exp(-x) overflows to +inf for very negative x, which gives
// exactly 0, never NaN; tanh comes from Sleef, which saturates cleanly.
template <typename T>
inline Vectorized<T> vsigmoid(const Vectorized<T>& x) {
  const Vectorized<T> one(T(1));
  return one / (one + x.neg().exp());
}

// Forward of one row. z: (4H) pre-activations, c_prev: (H), peep: (3H) or nullptr.
// Writes gates (4H, activated), c (H) and h (H). c may alias c_prev and h may alias nothing else.
template <typename T>
inline void cell_forward_row(const T* z, const T* c_prev, const T* peep, T* gates, T* c, T* h,
                             int64_t H) {
  using V = Vectorized<T>;
  const int64_t n = V::size();
  for (int64_t j = 0; j < H; j += n) {
    const int64_t cnt = std::min<int64_t>(n, H - j);
    V zi = V::loadu(z + j, cnt), zf = V::loadu(z + H + j, cnt);
    V zg = V::loadu(z + 2 * H + j, cnt), zo = V::loadu(z + 3 * H + j, cnt);
    V cp = V::loadu(c_prev + j, cnt);
    if (peep != nullptr) {
      zi = at::vec::fmadd(V::loadu(peep + j, cnt), cp, zi);
      zf = at::vec::fmadd(V::loadu(peep + H + j, cnt), cp, zf);
    }
    V i = vsigmoid(zi), f = vsigmoid(zf), g = zg.tanh();
    V cn = at::vec::fmadd(f, cp, i * g);
    if (peep != nullptr) zo = at::vec::fmadd(V::loadu(peep + 2 * H + j, cnt), cn, zo);
    V o = vsigmoid(zo);
    V hn = o * cn.tanh();
    i.store(gates + j, cnt);
    f.store(gates + H + j, cnt);
    g.store(gates + 2 * H + j, cnt);
    o.store(gates + 3 * H + j, cnt);
    cn.store(c + j, cnt);
    hn.store(h + j, cnt);
  }
}

// Backward of one row. gates (4H) activated, c (H) the cell after the step, c_prev (H),
// dh (H) gradient of h = o tanh(c) (before any projection), dc (H) gradient of c from the
// future; on return dc holds the gradient of c_prev. Writes dz (4H), the gradient of the
// pre-activations (the gradient of the peephole pre-activation terms is the same dz).
template <typename T>
inline void cell_backward_row(const T* gates, const T* c, const T* c_prev, const T* peep,
                              const T* dh, T* dc, T* dz, int64_t H) {
  using V = Vectorized<T>;
  const int64_t n = V::size();
  const V one(T(1));
  for (int64_t j = 0; j < H; j += n) {
    const int64_t cnt = std::min<int64_t>(n, H - j);
    V i = V::loadu(gates + j, cnt), f = V::loadu(gates + H + j, cnt);
    V g = V::loadu(gates + 2 * H + j, cnt), o = V::loadu(gates + 3 * H + j, cnt);
    V ct = V::loadu(c + j, cnt), cp = V::loadu(c_prev + j, cnt);
    V dhv = V::loadu(dh + j, cnt), dcv = V::loadu(dc + j, cnt);
    V tc = ct.tanh();
    V dzo = dhv * tc * o * (one - o);
    V dct = at::vec::fmadd(dhv * o, one - tc * tc, dcv);
    if (peep != nullptr) dct = at::vec::fmadd(dzo, V::loadu(peep + 2 * H + j, cnt), dct);
    V dzi = dct * g * i * (one - i);
    V dzf = dct * cp * f * (one - f);
    V dzg = dct * i * (one - g * g);
    V dcp = dct * f;
    if (peep != nullptr) {
      dcp = at::vec::fmadd(dzi, V::loadu(peep + j, cnt), dcp);
      dcp = at::vec::fmadd(dzf, V::loadu(peep + H + j, cnt), dcp);
    }
    dzi.store(dz + j, cnt);
    dzf.store(dz + H + j, cnt);
    dzg.store(dz + 2 * H + j, cnt);
    dzo.store(dz + 3 * H + j, cnt);
    dcp.store(dc + j, cnt);
  }
}

}  // namespace cpu
}  // namespace lstm_fused
