// Shapes and checks of lstm_frozen_layer: one direction of one LSTM layer in inference, its
// weights packed once (lstm_fused/frozen.py) in the layout the CPU kernel reads
// (csrc/cpu/lstm_frozen_cpu.cpp). Dimension letters as in lstm_layer_args.h; besides:
//   U = 16          hidden units of a panel (one AVX-512 vector of float32)
//   P = ceil(H / U) panels
//   q               values of one dot step: 1 (float32), 2 (bfloat16 pairs), 4 (int8 quads)
//   K_x = ceil(I / q), K_h = ceil(H / q)
//
//   x          (T, B, I) float32         input, time-major
//   h0, c0     (B, H) float32            initial state
//   w_ih       (P, K_x, 4, U, q)         W_ih packed: [p, k, g, u, j] = W_ih[g H + p U + u,
//   w_hh       (P, K_h, 4, U, q)           k q + j] (zero past H and past I / H), as float32,
//                                          bfloat16, or uint8 = int8 value + 128
//   bias       (P, 4, U) float32         b_ih + b_hh, zero past H
//   w_ih_scale (P, 4, U) float32         uint8 weights only: the scale of each weight row
//   w_hh_scale (P, 4, U) float32           (per output channel), zero past H
// Outputs: y (T, B, H), h_n (B, H), c_n (B, H), float32.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "optional_tensor.h"

namespace lstm_fused {

struct FrozenSizes {
  int64_t T, B, I, H, P, q;
};

constexpr int64_t kFrozenUnits = 16;  // U

// Values per dot step of a packed weight dtype (q), or 0 for a dtype with no frozen kernel.
inline int64_t frozen_group(at::ScalarType dt) {
  switch (dt) {
    case at::kFloat:
      return 1;
    case at::kBFloat16:
      return 2;
    case at::kByte:
      return 4;
    default:
      return 0;
  }
}

inline FrozenSizes check_frozen_args(const at::Tensor& x, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& w_ih,
                                     const at::Tensor& w_hh, const at::Tensor& bias,
                                     const c10::optional<at::Tensor>& w_ih_scale,
                                     const c10::optional<at::Tensor>& w_hh_scale,
                                     at::DeviceType device) {
  const char* op = "lstm_fused::lstm_frozen_layer";
  for (const at::Tensor* t : {&x, &h0, &c0, &w_ih, &w_hh, &bias})
    TORCH_CHECK(t->device().type() == device, op, ": every tensor must be on the ",
                at::DeviceTypeName(device), ", got one on ", t->device());
  TORCH_CHECK_VALUE(x.dim() == 3, op, ": x must be (T, B, I), got shape ", x.sizes());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK_VALUE(h0.dim() == 2 && h0.size(0) == x.size(1), op,
                    ": h0 must be (B, H) with B = ", x.size(1), ", got shape ", h0.sizes());
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  TORCH_CHECK_VALUE(c0.sizes() == h0.sizes(), op, ": c0 has shape ", c0.sizes(), ", expected ",
                    h0.sizes());
  for (const at::Tensor* t : {&h0, &c0, &bias})
    TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat, op, ": h0, c0 and bias must be float32, got ",
                     t->scalar_type());
  const int64_t q = frozen_group(w_hh.scalar_type());
  TORCH_CHECK_TYPE(q > 0, op, ": w_hh must be float32, bfloat16 or uint8 (int8 + 128), got ",
                   w_hh.scalar_type());
  TORCH_CHECK_TYPE(w_ih.scalar_type() == w_hh.scalar_type(), op, ": w_ih has dtype ",
                   w_ih.scalar_type(), ", expected ", w_hh.scalar_type(), " like w_hh");
  TORCH_CHECK_VALUE(H > 0, op, ": hidden size H must be positive, got h0 of shape ", h0.sizes());
  const int64_t U = kFrozenUnits, P = (H + U - 1) / U;
  const int64_t Kx = (I + q - 1) / q, Kh = (H + q - 1) / q;
  TORCH_CHECK_VALUE(w_ih.sizes() == at::IntArrayRef({P, Kx, 4, U, q}), op, ": w_ih has shape ",
                    w_ih.sizes(), ", expected ", at::IntArrayRef({P, Kx, 4, U, q}),
                    " (lstm_fused.frozen packs it)");
  TORCH_CHECK_VALUE(w_hh.sizes() == at::IntArrayRef({P, Kh, 4, U, q}), op, ": w_hh has shape ",
                    w_hh.sizes(), ", expected ", at::IntArrayRef({P, Kh, 4, U, q}),
                    " (lstm_fused.frozen packs it)");
  TORCH_CHECK_VALUE(bias.sizes() == at::IntArrayRef({P, 4, U}), op, ": bias has shape ",
                    bias.sizes(), ", expected ", at::IntArrayRef({P, 4, U}));
  const bool int8 = q == 4;
  for (const auto* s : {&w_ih_scale, &w_hh_scale}) {
    const char* name = s == &w_ih_scale ? "w_ih_scale" : "w_hh_scale";
    TORCH_CHECK_VALUE(present(*s) == int8, op, ": ", name,
                      int8 ? " is required with uint8 weights" : " is only for uint8 weights");
    if (!present(*s)) continue;
    TORCH_CHECK((*s)->device().type() == device, op, ": ", name, " must be on the ",
                at::DeviceTypeName(device));
    TORCH_CHECK_TYPE((*s)->scalar_type() == at::kFloat, op, ": ", name, " must be float32, got ",
                     (*s)->scalar_type());
    TORCH_CHECK_VALUE((*s)->sizes() == at::IntArrayRef({P, 4, U}), op, ": ", name, " has shape ",
                      (*s)->sizes(), ", expected ", at::IntArrayRef({P, 4, U}));
  }
  return {T, B, I, H, P, q};
}

}  // namespace lstm_fused
