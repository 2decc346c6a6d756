// Shapes and checks of one LSTM layer call, shared by the CPU and CUDA implementations.
//
// Dimension letters (docs/contract.md): T time steps, B batch, I input size, H hidden size,
// P projection size (0 = none), R = P if P > 0 else H (size of the recurrent state h),
// G = 4H gate rows in PyTorch's order i, f, g, o, D directions (1 or 2).
//
// One call runs every direction of one layer over the whole sequence:
//   x       (T, B, I)     input, time-major
//   h0      (D, B, R)     initial recurrent state
//   c0      (D, B, H)     initial cell state
//   w_ih    (D, G, I)     input weights, direction d = 1 runs backwards in time
//   w_hh    (D, G, R)     recurrent weights
//   bias    (D, G)        b_ih + b_hh, optional
//   w_hr    (D, P, H)     projection weights, optional
//   w_peep  (D, 3, H)     peephole weights (w_ci, w_cf, w_co), optional
//   lengths (B,) int64    valid steps per sequence, optional: steps t >= lengths[b] leave the
//                         state unchanged and give a zero output (a packed sequence)
//   resets  (T, B) bool   optional, contiguous: where resets[t, b] is set, row b's state is
//                         replaced by its initial state (h0[d, b], c0[d, b]) at the boundary
//                         between steps t-1 and t. Direction 0 replaces it before step t;
//                         direction 1 (t going down) before step t-1. Resets at t >= lengths[b]
//                         are ignored; resets[0] changes nothing. No gradient crosses a reset.
// Outputs of the forward:
//   y       (T, B, D*R)   outputs of both directions side by side
//   h_n     (D, B, R), c_n (D, B, H)
//   gates   (D, T, B, G)  activated gates i, f, g, o (zero at padded steps), kept for backward
//   cells   (D, T, B, H)  cell state after each step (carried through padded steps)
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <limits>

#include "lengths.h"
#include "optional_tensor.h"
#include "switches.h"

namespace lstm_fused {

// A tensor a kernel must overwrite completely. With the switch poison on (csrc/switches.h; the
// test suite sets LSTM_FUSED_POISON=1) it starts as NaN, so an element the kernel forgets fails
// the tests instead of passing on whatever the allocator left there.
inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  if (switches().poison) return at::full(sizes, std::numeric_limits<double>::quiet_NaN(), options);
  return at::empty(sizes, options);
}

struct LSTMLayerSizes {
  int64_t T, B, I, H, P, R, G, D;
};

// The device and dtypes of one backend's LSTM kernels.
struct LayerBackend {
  at::DeviceType device;
  const char* name;  // in messages: "cpu", "cuda", "emulated cuda"
  bool half_types;   // float16 and bfloat16 besides float32 and float64
};

// x on the backend's device, in a dtype it has kernels for.
inline void check_layer_backend(const at::Tensor& x, const LayerBackend& backend) {
  TORCH_CHECK(x.device().type() == backend.device, "lstm_fused (", backend.name,
              " backend): x is on ", x.device(), ", expected a ",
              at::DeviceTypeName(backend.device), " tensor");
  const auto dt = x.scalar_type();
  const bool half = dt == at::kHalf || dt == at::kBFloat16;
  TORCH_CHECK_TYPE(
      dt == at::kFloat || dt == at::kDouble || (backend.half_types && half), "lstm_fused (",
      backend.name, " backend): dtype ", dt, " is not supported; use ",
      backend.half_types ? "float32, float16, bfloat16 or float64" : "float32 or float64",
      " (or backend='reference')");
}

inline void check_optional(const c10::optional<at::Tensor>& t, const char* name,
                           at::IntArrayRef expected, const at::Tensor& like) {
  if (!t.has_value() || !t->defined()) return;
  TORCH_CHECK_VALUE(t->sizes() == expected, "lstm_fused: ", name, " has shape ", t->sizes(),
                    ", expected ", expected);
  TORCH_CHECK_TYPE(t->scalar_type() == like.scalar_type(), "lstm_fused: ", name, " has dtype ",
                   t->scalar_type(), ", expected ", like.scalar_type(), " like the input");
  TORCH_CHECK(t->device() == like.device(), "lstm_fused: ", name, " is on ", t->device(),
              " but the input is on ", like.device());
}

inline void check_same(const at::Tensor& t, const char* name, at::IntArrayRef expected,
                       const at::Tensor& like) {
  check_optional(c10::optional<at::Tensor>(t), name, expected, like);
}

// Checks every argument of a layer call (shapes, dtypes, devices: no device synchronisation)
// and returns its sizes. lengths: csrc/lengths.h (its values are checked where they are read
// on the host; the CUDA kernels are memory-safe for any value).
inline LSTMLayerSizes check_layer_args(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& w_hr, const c10::optional<at::Tensor>& w_peep,
    const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& resets,
    const LayerBackend& backend) {
  TORCH_CHECK_VALUE(x.dim() == 3, "lstm_fused: x must be (T, B, I), got shape ", x.sizes());
  TORCH_CHECK_VALUE(w_ih.dim() == 3, "lstm_fused: w_ih must be (D, 4H, I), got shape ",
                    w_ih.sizes());
  LSTMLayerSizes s;
  s.T = x.size(0);
  s.B = x.size(1);
  s.I = x.size(2);
  s.D = w_ih.size(0);
  s.G = w_ih.size(1);
  TORCH_CHECK_VALUE(s.D == 1 || s.D == 2, "lstm_fused: w_ih must hold 1 or 2 directions, got ",
                    s.D);
  TORCH_CHECK_VALUE(s.G % 4 == 0 && s.G > 0, "lstm_fused: w_ih.size(1) must be 4H > 0, got ", s.G);
  s.H = s.G / 4;
  const bool has_proj = present(w_hr);
  s.P = has_proj ? w_hr->size(1) : 0;
  s.R = has_proj ? s.P : s.H;
  TORCH_CHECK_TYPE(x.scalar_type() == w_ih.scalar_type(), "lstm_fused: x has dtype ",
                   x.scalar_type(), " but w_ih has ", w_ih.scalar_type());
  check_same(w_ih, "w_ih", {s.D, s.G, s.I}, x);
  check_same(w_hh, "w_hh", {s.D, s.G, s.R}, x);
  check_same(h0, "h0", {s.D, s.B, s.R}, x);
  check_same(c0, "c0", {s.D, s.B, s.H}, x);
  check_optional(bias, "bias", {s.D, s.G}, x);
  if (has_proj) {
    TORCH_CHECK_VALUE(s.P > 0 && s.P < s.H, "lstm_fused: proj_size must be in (0, H=", s.H,
                      "), got ", s.P);
    check_optional(w_hr, "w_hr", {s.D, s.P, s.H}, x);
  }
  check_optional(w_peep, "w_peep", {s.D, 3, s.H}, x);
  check_lengths(lengths, s.B, "lstm_fused");
  if (present(resets)) {
    TORCH_CHECK_VALUE(resets->dim() == 2 && resets->size(0) == s.T && resets->size(1) == s.B,
                      "lstm_fused: resets must have shape (T, B) = (", s.T, ", ", s.B, "), got ",
                      resets->sizes());
    TORCH_CHECK_TYPE(resets->scalar_type() == at::kBool, "lstm_fused: resets must be bool, got ",
                     resets->scalar_type());
    TORCH_CHECK(resets->device() == x.device(), "lstm_fused: resets is on ", resets->device(),
                " but the input is on ", x.device());
    TORCH_CHECK_VALUE(resets->is_contiguous(), "lstm_fused: resets must be contiguous");
  }
  check_layer_backend(x, backend);
  return s;
}

}  // namespace lstm_fused
