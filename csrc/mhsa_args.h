// Arguments of the multi-head self-attention core operators (csrc/attention_schemas.h).
//
//   q, k, v   (B, N, T, Dh)   same dtype and device; any strides (kernels take contiguous copies)
//   lengths   (B,) int64 or undefined; key t of batch row b is valid iff t < lengths[b]
//   dropout_p, seed  attention dropout (attention_dropout.h; seed a one-element int64 tensor);
//                    dropout_p = 0: none
//   grad_out, out (B, N, T, Dh); lse (B, N, T) in the accumulation type (float / double)
//
// The Python entry points check user input with clear messages first (lstm_fused.functional);
// these checks (shapes, dtypes, devices: no device synchronisation) guard direct calls of the
// operators. lengths: csrc/lengths.h (any device; its values checked where they are on the
// host; the CUDA kernels clamp them where they read them, mhsa_row_length in
// csrc/cuda/mhsa_kernels.cuh). MhsaOps (below) runs the checks before either backend's kernels.
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <utility>

#include "attention_dropout.h"
#include "lengths.h"
#include "optional_tensor.h"

namespace lstm_fused {

struct MhsaSizes {
  int64_t B, N, T, Dh;
};

// Shapes ValueError, dtypes TypeError, devices RuntimeError, as in every family.
inline MhsaSizes check_mhsa_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const c10::optional<at::Tensor>& lengths) {
  const char* where = "lstm_fused::mhsa";
  TORCH_CHECK_VALUE(q.dim() == 4, where, ": q must be 4-D (B, N, T, Dh), got shape ",
                    shape_str(q.sizes()));
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"k", &k}, {"v", &v}}) {
    TORCH_CHECK_VALUE(t->sizes() == q.sizes(), where, ": ", name, " has shape ",
                      shape_str(t->sizes()), ", expected q's shape ", shape_str(q.sizes()));
    TORCH_CHECK_TYPE(t->scalar_type() == q.scalar_type(), where, ": ", name, " has dtype ",
                     dtype_str(t->scalar_type()), ", expected q's dtype ",
                     dtype_str(q.scalar_type()));
    TORCH_CHECK(t->device() == q.device(), where, ": ", name, " is on ", t->device(),
                ", expected q's device ", q.device());
  }
  MhsaSizes s{q.size(0), q.size(1), q.size(2), q.size(3)};
  check_lengths(lengths, s.B, where);
  return s;
}

// The dropout of a call: dropout_p in [0, 1] (0: none); seed a one-element int64 CPU tensor
// (read on the host, no device sync), required when dropout_p > 0.
inline AttentionDropout mhsa_dropout(double dropout_p, const c10::optional<at::Tensor>& seed) {
  TORCH_CHECK_VALUE(dropout_p >= 0.0 && dropout_p <= 1.0,
                    "lstm_fused::mhsa: dropout_p must be in [0, 1], got ", dropout_p);
  if (dropout_p == 0.0) return AttentionDropout();
  TORCH_CHECK_VALUE(present(seed) && seed->numel() == 1 && seed->scalar_type() == at::kLong &&
                        seed->device().is_cpu(),
                    "lstm_fused::mhsa: dropout_p > 0 needs seed, a one-element int64 CPU tensor");
  return AttentionDropout(dropout_p, seed->item<int64_t>());
}

inline at::ScalarType mhsa_acc_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The checked arguments of a call: its sizes and its dropout.
struct MhsaCall {
  MhsaSizes s;
  AttentionDropout drop;
};

inline MhsaCall check_mhsa_forward_call(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v,
                                        const c10::optional<at::Tensor>& lengths, double dropout_p,
                                        const c10::optional<at::Tensor>& seed) {
  return {check_mhsa_args(q, k, v, lengths), mhsa_dropout(dropout_p, seed)};
}

inline void check_mhsa_backward_args(const MhsaSizes& s, const at::Tensor& grad_out,
                                     const at::Tensor& q, const at::Tensor& out,
                                     const at::Tensor& lse) {
  TORCH_CHECK_VALUE(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(),
                    "lstm_fused::mhsa_backward: grad_out and out must have the shape of q ",
                    shape_str(q.sizes()));
  TORCH_CHECK_VALUE(
      lse.dim() == 3 && lse.size(0) == s.B && lse.size(1) == s.N && lse.size(2) == s.T,
      "lstm_fused::mhsa_backward: lse has shape ", shape_str(lse.sizes()), ", expected (", s.B,
      ", ", s.N, ", ", s.T, ")");
  TORCH_CHECK_TYPE(lse.scalar_type() == mhsa_acc_type(q.scalar_type()),
                   "lstm_fused::mhsa_backward: lse has dtype ", dtype_str(lse.scalar_type()),
                   ", expected ", dtype_str(mhsa_acc_type(q.scalar_type())));
}

// Every argument of the backward: the forward's, then grad_out, out and lse.
inline MhsaCall check_mhsa_backward_call(const at::Tensor& grad_out, const at::Tensor& q,
                                         const at::Tensor& k, const at::Tensor& v,
                                         const c10::optional<at::Tensor>& lengths, double dropout_p,
                                         const c10::optional<at::Tensor>& seed,
                                         const at::Tensor& out, const at::Tensor& lse) {
  const MhsaCall call = check_mhsa_forward_call(q, k, v, lengths, dropout_p, seed);
  check_mhsa_backward_args(call.s, grad_out, q, out, lse);
  return call;
}

// The arguments of mhsa_backward but dropout_p and seed, checked.
struct MhsaBackwardInputs {
  const at::Tensor &grad_out, &q, &k, &v;
  const c10::optional<at::Tensor>& lengths;
  double scale;
  const at::Tensor &out, &lse;
};

// The two operators of one backend from its kernels
//   Forward(s, drop, q, k, v, lengths, scale) -> (out, lse) and
//   Backward(s, drop, MhsaBackwardInputs) -> (grad_q, grad_k, grad_v):
// the C++ signatures of the schemas (csrc/attention_schemas.h), written once, with every
// argument checked before a kernel runs.
template <auto Forward, auto Backward>
struct MhsaOps {
  static std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v,
                                                    const c10::optional<at::Tensor>& lengths,
                                                    double scale, double dropout_p,
                                                    const c10::optional<at::Tensor>& seed) {
    const MhsaCall c = check_mhsa_forward_call(q, k, v, lengths, dropout_p, seed);
    return Forward(c.s, c.drop, q, k, v, lengths, scale);
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
      const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
      const c10::optional<at::Tensor>& lengths, double scale, double dropout_p,
      const c10::optional<at::Tensor>& seed, const at::Tensor& out, const at::Tensor& lse) {
    const MhsaCall c =
        check_mhsa_backward_call(grad_out, q, k, v, lengths, dropout_p, seed, out, lse);
    return Backward(c.s, c.drop, MhsaBackwardInputs{grad_out, q, k, v, lengths, scale, out, lse});
  }
};

}  // namespace lstm_fused
