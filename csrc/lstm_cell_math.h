// The LSTM cell math of one element (one batch row b, one hidden unit j), forward and backward,
// as __host__ __device__ functions: the CUDA kernels (csrc/cuda/*.cu) include this header, and
// so does a CPU test build (tests/test_cell_math_header.py), so the exact math of the GPU path
// is checked against lstm_fused.reference on the CPU.
//
// Dimension letters (docs/contract.md), used in every comment of the CUDA code:
//   T time steps, B batch, I input size, H hidden size, P projection size (0 = none),
//   R = P if P > 0 else H (size of the recurrent state), G = 4H gate rows in PyTorch's order
//   i, f, g, o, D directions (1 or 2).
//
// Forward of one element, pre-activations z = x W_ih^T + r W_hh^T + b (gate blocks of size H),
// optional peephole weights w_ci, w_cf, w_co (zero when the layer has none):
//   i = sigmoid(z_i + w_ci c_prev)   f = sigmoid(z_f + w_cf c_prev)   g = tanh(z_g)
//   c = f c_prev + i g               o = sigmoid(z_o + w_co c)         h = o tanh(c)
// Backward, given dh (gradient of h, before any projection) and dc (gradient of c from later
// steps): the gradients dz of the four pre-activations and dc_prev. The gradient of a peephole
// pre-activation term is the same dz, so the peephole weight gradients are sums of dz * c.
//
// Accumulation type: every computation runs in AccT = float for float, half and bfloat16
// storage (double for double), converted once on load and once on store.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define LSTM_HD __host__ __device__ __forceinline__
#else
#define LSTM_HD inline
#endif

namespace lstm_fused {

// The type the cell math of storage type scalar_t runs in: double for double, else float.
template <typename scalar_t>
struct CellAcc {
  using type = float;
};
template <>
struct CellAcc<double> {
  using type = double;
};
template <typename scalar_t>
using cell_acc_t = typename CellAcc<scalar_t>::type;

LSTM_HD float cell_exp(float x) { return expf(x); }
LSTM_HD double cell_exp(double x) { return exp(x); }
LSTM_HD float cell_tanh(float x) { return tanhf(x); }
LSTM_HD double cell_tanh(double x) { return tanh(x); }

// sigmoid(x) without the overflow of the naive 1 / (1 + exp(-x)) form's intermediate inf/inf:
// exp is only taken of -|x| <= 0, so it lies in (0, 1] and the division never sees inf.
template <typename AccT>
LSTM_HD AccT cell_sigmoid(AccT x) {
  const AccT e = cell_exp(x >= AccT(0) ? -x : x);  // exp(-|x|)
  const AccT one = AccT(1);
  return x >= AccT(0) ? one / (one + e) : e / (one + e);
}

// Peephole weights of one hidden unit (all zero for a layer without peepholes).
template <typename AccT>
struct CellPeep {
  AccT ci, cf, co;
};

// Activated gates and new state of one element.
template <typename AccT>
struct CellForward {
  AccT i, f, g, o;  // activated gates
  AccT c;           // cell state after the step
  AccT h;           // o * tanh(c), before any projection
};

template <typename AccT>
LSTM_HD CellForward<AccT> cell_forward(AccT z_i, AccT z_f, AccT z_g, AccT z_o, AccT c_prev,
                                       CellPeep<AccT> peep) {
  CellForward<AccT> r;
  r.i = cell_sigmoid(z_i + peep.ci * c_prev);
  r.f = cell_sigmoid(z_f + peep.cf * c_prev);
  r.g = cell_tanh(z_g);
  r.c = r.f * c_prev + r.i * r.g;
  r.o = cell_sigmoid(z_o + peep.co * r.c);
  r.h = r.o * cell_tanh(r.c);
  return r;
}

// Gradients of one element's pre-activations and of c_prev.
template <typename AccT>
struct CellBackward {
  AccT dz_i, dz_f, dz_g, dz_o;
  AccT dc_prev;
};

// i, f, g, o: the activated gates saved by the forward; c: the cell after the step; c_prev:
// the cell before it; dh: gradient of h = o tanh(c); dc: gradient of c from later steps.
template <typename AccT>
LSTM_HD CellBackward<AccT> cell_backward(AccT i, AccT f, AccT g, AccT o, AccT c, AccT c_prev,
                                         AccT dh, AccT dc, CellPeep<AccT> peep) {
  const AccT one = AccT(1);
  const AccT tc = cell_tanh(c);
  CellBackward<AccT> r;
  r.dz_o = dh * tc * o * (one - o);
  // c feeds h through tanh, the next step (dc) and, with peepholes, the output gate.
  const AccT dc_total = dc + dh * o * (one - tc * tc) + r.dz_o * peep.co;
  r.dz_i = dc_total * g * i * (one - i);
  r.dz_f = dc_total * c_prev * f * (one - f);
  r.dz_g = dc_total * i * (one - g * g);
  r.dc_prev = dc_total * f + r.dz_i * peep.ci + r.dz_f * peep.cf;
  return r;
}

// Element j of a row, loaded from storage type scalar_t and stored back: the conversion path
// of the kernels (float accumulation for half / bfloat16), shared by the CPU test build.
//   z (G) pre-activations of the row, c_prev (H), peep (3H) or nullptr;
//   writes gates (G) activated, c (H), h (H).
template <typename scalar_t>
LSTM_HD void cell_forward_element(const scalar_t* z, const scalar_t* c_prev, const scalar_t* peep,
                                  scalar_t* gates, scalar_t* c, scalar_t* h, int64_t H, int64_t j) {
  using AccT = cell_acc_t<scalar_t>;
  CellPeep<AccT> pw{AccT(0), AccT(0), AccT(0)};
  if (peep != nullptr)
    pw = {static_cast<AccT>(peep[j]), static_cast<AccT>(peep[H + j]),
          static_cast<AccT>(peep[2 * H + j])};
  const CellForward<AccT> r = cell_forward<AccT>(
      static_cast<AccT>(z[j]), static_cast<AccT>(z[H + j]), static_cast<AccT>(z[2 * H + j]),
      static_cast<AccT>(z[3 * H + j]), static_cast<AccT>(c_prev[j]), pw);
  gates[j] = static_cast<scalar_t>(r.i);
  gates[H + j] = static_cast<scalar_t>(r.f);
  gates[2 * H + j] = static_cast<scalar_t>(r.g);
  gates[3 * H + j] = static_cast<scalar_t>(r.o);
  c[j] = static_cast<scalar_t>(r.c);
  h[j] = static_cast<scalar_t>(r.h);
}

//   gates (G) activated, c (H) after the step, c_prev (H), peep (3H) or nullptr, dh (H),
//   dc (H) in: gradient of c, out: gradient of c_prev; writes dz (G).
template <typename scalar_t>
LSTM_HD void cell_backward_element(const scalar_t* gates, const scalar_t* c, const scalar_t* c_prev,
                                   const scalar_t* peep, const scalar_t* dh, scalar_t* dc,
                                   scalar_t* dz, int64_t H, int64_t j) {
  using AccT = cell_acc_t<scalar_t>;
  CellPeep<AccT> pw{AccT(0), AccT(0), AccT(0)};
  if (peep != nullptr)
    pw = {static_cast<AccT>(peep[j]), static_cast<AccT>(peep[H + j]),
          static_cast<AccT>(peep[2 * H + j])};
  const CellBackward<AccT> r =
      cell_backward<AccT>(static_cast<AccT>(gates[j]), static_cast<AccT>(gates[H + j]),
                          static_cast<AccT>(gates[2 * H + j]), static_cast<AccT>(gates[3 * H + j]),
                          static_cast<AccT>(c[j]), static_cast<AccT>(c_prev[j]),
                          static_cast<AccT>(dh[j]), static_cast<AccT>(dc[j]), pw);
  dz[j] = static_cast<scalar_t>(r.dz_i);
  dz[H + j] = static_cast<scalar_t>(r.dz_f);
  dz[2 * H + j] = static_cast<scalar_t>(r.dz_g);
  dz[3 * H + j] = static_cast<scalar_t>(r.dz_o);
  dc[j] = static_cast<scalar_t>(r.dc_prev);
}

}  // namespace lstm_fused
