// Arguments of the multi-head self-attention core operators (csrc/mhsa_ops.cpp).
//
//   q, k, v   (B, N, T, Dh)   same dtype and device; any strides (kernels take contiguous copies)
//   lengths   (B,) int64 or undefined; key t of batch row b is valid iff t < lengths[b]
//   dropout_p, seed  attention dropout (attention_dropout.h; seed a one-element int64 tensor);
//                    dropout_p = 0: none
//   grad_out, out (B, N, T, Dh); lse (B, N, T) in the accumulation type (float / double)
//
// The Python entry points check user input with clear messages first (lstm_fused.functional);
// these checks (shapes, dtypes, devices: no device synchronisation) guard direct calls of the
// operators. The values of lengths are the caller's contract: the CPU kernels clamp them, the
// CUDA kernels too (mhsa_row_length in csrc/cuda/mhsa_kernels.cuh). MhsaOps (below) runs the
// checks before either backend's kernels.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "attention_dropout.h"
#include "optional_tensor.h"

namespace lstm_fused {

struct MhsaSizes {
  int64_t B, N, T, Dh;
};

inline MhsaSizes check_mhsa_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const c10::optional<at::Tensor>& lengths) {
  TORCH_CHECK(q.dim() == 4, "mhsa: q must be (B, N, T, Dh), got ", q.sizes());
  TORCH_CHECK(k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "mhsa: k and v must have the shape of q ", q.sizes(), ", got ", k.sizes(),
              " and ", v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "mhsa: q, k, v must share a dtype");
  TORCH_CHECK(k.device() == q.device() && v.device() == q.device(),
              "mhsa: q, k, v must be on one device");
  MhsaSizes s{q.size(0), q.size(1), q.size(2), q.size(3)};
  if (present(lengths)) {
    TORCH_CHECK(lengths->dim() == 1 && lengths->size(0) == s.B,
                "mhsa: lengths must be (B,) = (", s.B, ",), got ", lengths->sizes());
    TORCH_CHECK(lengths->scalar_type() == at::kLong, "mhsa: lengths must be int64");
    TORCH_CHECK(lengths->device() == q.device(), "mhsa: lengths must be on the device of q");
  }
  return s;
}

// The dropout of a call: dropout_p in [0, 1] (0: none); seed a one-element int64 CPU tensor
// (read on the host, no device sync), required when dropout_p > 0.
inline AttentionDropout mhsa_dropout(double dropout_p, const c10::optional<at::Tensor>& seed) {
  TORCH_CHECK_VALUE(dropout_p >= 0.0 && dropout_p <= 1.0,
                    "mhsa: dropout_p must be in [0, 1], got ", dropout_p);
  if (dropout_p == 0.0) return AttentionDropout();
  TORCH_CHECK_VALUE(present(seed) && seed->numel() == 1 && seed->scalar_type() == at::kLong &&
                        seed->device().is_cpu(),
                    "mhsa: dropout_p > 0 needs seed, a one-element int64 CPU tensor");
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
                                        const c10::optional<at::Tensor>& lengths,
                                        double dropout_p, const c10::optional<at::Tensor>& seed) {
  return {check_mhsa_args(q, k, v, lengths), mhsa_dropout(dropout_p, seed)};
}

inline void check_mhsa_backward_args(const MhsaSizes& s, const at::Tensor& grad_out,
                                     const at::Tensor& q, const at::Tensor& out,
                                     const at::Tensor& lse) {
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "mhsa_backward: grad_out and out must have the shape of q ", q.sizes());
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == s.B && lse.size(1) == s.N && lse.size(2) == s.T,
              "mhsa_backward: lse must be (B, N, T) = (", s.B, ", ", s.N, ", ", s.T, "), got ",
              lse.sizes());
  TORCH_CHECK(lse.scalar_type() == mhsa_acc_type(q.scalar_type()),
              "mhsa_backward: lse must be ", mhsa_acc_type(q.scalar_type()), ", got ",
              lse.scalar_type());
}

// Every argument of the backward: the forward's, then grad_out, out and lse.
inline MhsaCall check_mhsa_backward_call(const at::Tensor& grad_out, const at::Tensor& q,
                                         const at::Tensor& k, const at::Tensor& v,
                                         const c10::optional<at::Tensor>& lengths,
                                         double dropout_p,
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
