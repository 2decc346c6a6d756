// Operator schemas of the attention families (docs/contract.md, section 2), defined by one
// function each, which csrc/schemas.h calls for the library and for the CUDA emulation test
// library alike, so that both declare the very same operators. Argument checks:
// csrc/attention_args.h (attention), csrc/mhsa_args.h (self-attention).
//
// Layouts (letters of docs/contract.md; R rows, N columns of a flattened softmax):
//   masked_softmax: scores (R, N); lengths (R,) int64 per-row valid prefix; mask (R, N) bool,
//                   True = take part. Positions excluded get probability exactly 0.
//   attention_pooling: x (B, T, D), proj (B, T, A) = x W_h^T + b, v (A,), qproj (B, A) =
//                   q W_q^T, lengths (B,) -> context (B, D), alpha (B, T), lse (B,) (log-sum-exp
//                   of the valid scores, -inf for an empty row).
//   channel_masked_mean: x (B, T, C) -> mean over t < lengths[b] (B, C).
//   channel_rescale: y = x * w[:, None, :] on valid steps, 0 on padding; w (B, C).
// The inner (last) dimension of every 3-D input must have stride 1; B and T strides are free.
//   mhsa (self-attention core): out = softmax(scale * q k^T over the keys t < lengths[b]) v,
//                   flash-style (the T x T matrix is never written). q, k, v (B, N, T, Dh);
//                   lengths (B,) int64 or None. Returns out (B, N, T, Dh) (zeros for a batch
//                   row of length 0) and lse (B, N, T), the log-sum-exp of the scaled scores of
//                   each query row (-inf for length 0), in float32 (float64 for float64).
//                   dropout_p > 0: attention dropout (training) with the counter-based mask of
//                   csrc/attention_dropout.h drawn from seed, a one-element int64 tensor (a
//                   tensor, not an int, so that torch.compile can trace a freshly drawn seed);
//                   lse stays that of the weights before dropout. The backward takes the
//                   forward's saved out and lse, and the same dropout_p and seed.
#pragma once

#include <torch/library.h>

#include "op_schema.h"

namespace lstm_fused {

inline void define_attention_ops(torch::Library& m) {
  def_with_triton(
      m,
      "masked_softmax_forward(Tensor scores, Tensor? lengths, Tensor? mask, float scale) "
      "-> Tensor");
  def_with_triton(
      m, "masked_softmax_backward(Tensor grad_probs, Tensor probs, float scale) -> Tensor");
  def_with_triton(m,
                  "attention_pooling_forward(Tensor x, Tensor proj, Tensor v, Tensor? qproj, "
                  "Tensor? lengths) -> (Tensor context, Tensor alpha, Tensor lse)");
  // grad_qproj is an empty tensor when qproj is absent.
  def_with_triton(
      m,
      "attention_pooling_backward(Tensor grad_context, Tensor grad_alpha, Tensor grad_lse, "
      "Tensor x, Tensor proj, Tensor v, Tensor? qproj, Tensor? lengths, Tensor alpha, "
      "Tensor context) -> (Tensor grad_x, Tensor grad_proj, Tensor grad_v, Tensor grad_qproj)");
  def_with_triton(m, "channel_masked_mean_forward(Tensor x, Tensor? lengths) -> Tensor");
  def_with_triton(
      m, "channel_masked_mean_backward(Tensor grad_mean, Tensor x, Tensor? lengths) -> Tensor");
  def_with_triton(m, "channel_rescale_forward(Tensor x, Tensor w, Tensor? lengths) -> Tensor");
  def_with_triton(m,
                  "channel_rescale_backward(Tensor grad_y, Tensor x, Tensor w, Tensor? lengths) "
                  "-> (Tensor grad_x, Tensor grad_w)");
}

inline void define_mhsa_ops(torch::Library& m) {
  def_with_triton(m,
                  "mhsa_forward(Tensor q, Tensor k, Tensor v, Tensor? lengths, float scale, "
                  "float dropout_p=0.0, Tensor? seed=None) -> (Tensor out, Tensor lse)");
  def_with_triton(m,
                  "mhsa_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? lengths, "
                  "float scale, float dropout_p, Tensor? seed, Tensor out, Tensor lse) "
                  "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
}

}  // namespace lstm_fused
