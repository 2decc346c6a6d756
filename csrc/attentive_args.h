// The checks of attentive_lstm_inference (the last layer of an attentive LSTM pooled while it
// runs): the layer arguments as lstm_layer_forward (lstm_layer_args.h), one direction, and the
// pooling tensors proj_weight (A, R), proj_bias (A,) or None, v (A,), qproj (B, A) or None,
// of x's dtype and device. Shared by every implementation (C++ CPU, and the Triton one through
// the operator lstm_fused::attentive_lstm_inference_check, csrc/check_ops.cpp).
#pragma once

#include <ATen/ATen.h>

#include "lstm_layer_args.h"

namespace lstm_fused {

struct AttentiveSizes {
  LSTMLayerSizes layer;
  int64_t A;
};

inline AttentiveSizes check_attentive_args(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& w_hr, const c10::optional<at::Tensor>& w_peep,
    const c10::optional<at::Tensor>& lengths, const at::Tensor& proj_weight,
    const c10::optional<at::Tensor>& proj_bias, const at::Tensor& v,
    const c10::optional<at::Tensor>& qproj, int64_t chunk_size, const LayerBackend& backend) {
  const char* op = "lstm_fused::attentive_lstm_inference";
  const LSTMLayerSizes s =
      check_layer_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, c10::nullopt, backend);
  TORCH_CHECK_VALUE(s.D == 1, op, ": one direction only (w_ih of shape (1, 4H, I)), got D = ", s.D);
  TORCH_CHECK_VALUE(chunk_size >= 1, op, ": chunk_size must be >= 1, got ", chunk_size);
  TORCH_CHECK_VALUE(proj_weight.dim() == 2 && proj_weight.size(1) == s.R, op,
                    ": proj_weight has shape ", proj_weight.sizes(), ", expected (A, ", s.R, ")");
  const int64_t A = proj_weight.size(0);
  TORCH_CHECK_VALUE(v.dim() == 1 && v.size(0) == A, op, ": v has shape ", v.sizes(), ", expected (",
                    A, ",)");
  TORCH_CHECK_VALUE(!present(proj_bias) || (proj_bias->dim() == 1 && proj_bias->size(0) == A), op,
                    ": proj_bias has shape ",
                    present(proj_bias) ? proj_bias->sizes() : at::IntArrayRef{}, ", expected (", A,
                    ",)");
  TORCH_CHECK_VALUE(
      !present(qproj) || (qproj->dim() == 2 && qproj->size(0) == s.B && qproj->size(1) == A), op,
      ": qproj has shape ", present(qproj) ? qproj->sizes() : at::IntArrayRef{}, ", expected (",
      s.B, ", ", A, ")");
  for (const at::Tensor* t :
       {&proj_weight, &v, present(proj_bias) ? &*proj_bias : &v, present(qproj) ? &*qproj : &v}) {
    TORCH_CHECK_TYPE(t->scalar_type() == x.scalar_type(), op,
                     ": the attention tensors must "
                     "share x's dtype ",
                     x.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, ": the attention tensors must be on ", x.device(),
                ", got ", t->device());
  }
  return {s, A};
}

}  // namespace lstm_fused
