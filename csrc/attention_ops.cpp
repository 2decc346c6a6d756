// Operator schemas of the attention family (SPEC §2). Kernels: csrc/cpu/attention_cpu.cpp and
// csrc/cuda/attention_*.cu; fake kernels and autograd: lstm_fused/backends/attention.py.
//
// Layouts (letters of SPEC.md; R rows, N columns of a flattened softmax):
//   masked_softmax: scores (R, N); lengths (R,) int64 per-row valid prefix; mask (R, N) bool,
//                   True = take part. Positions excluded get probability exactly 0.
//   attention_pooling: x (B, T, D), proj (B, T, A) = x W_h^T + b, v (A,), qproj (B, A) =
//                   q W_q^T, lengths (B,) -> context (B, D), alpha (B, T), lse (B,) (log-sum-exp
//                   of the valid scores, -inf for an empty row).
//   channel_masked_mean: x (B, T, C) -> mean over t < lengths[b] (B, C).
//   channel_rescale: y = x * w[:, None, :] on valid steps, 0 on padding; w (B, C).
// The inner (last) dimension of every 3-D input must have stride 1; B and T strides are free.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(lstm_fused, m) {
  m.def("masked_softmax_forward(Tensor scores, Tensor? lengths, Tensor? mask, float scale) "
        "-> Tensor");
  m.def("masked_softmax_backward(Tensor grad_probs, Tensor probs, float scale) -> Tensor");
  m.def("attention_pooling_forward(Tensor x, Tensor proj, Tensor v, Tensor? qproj, "
        "Tensor? lengths) -> (Tensor context, Tensor alpha, Tensor lse)");
  // grad_qproj is an empty tensor when qproj is absent.
  m.def("attention_pooling_backward(Tensor grad_context, Tensor grad_alpha, Tensor grad_lse, "
        "Tensor x, Tensor proj, Tensor v, Tensor? qproj, Tensor? lengths, Tensor alpha, "
        "Tensor context) -> (Tensor grad_x, Tensor grad_proj, Tensor grad_v, Tensor grad_qproj)");
  m.def("channel_masked_mean_forward(Tensor x, Tensor? lengths) -> Tensor");
  m.def("channel_masked_mean_backward(Tensor grad_mean, Tensor x, Tensor? lengths) -> Tensor");
  m.def("channel_rescale_forward(Tensor x, Tensor w, Tensor? lengths) -> Tensor");
  m.def("channel_rescale_backward(Tensor grad_y, Tensor x, Tensor w, Tensor? lengths) "
        "-> (Tensor grad_x, Tensor grad_w)");
}
