// Operator schemas of the multi-head self-attention core (op family "self_attention").
// Kernels: csrc/cpu/mhsa_cpu.cpp (CPU), csrc/cuda/mhsa_cuda.cu (CUDA); fake kernels and
// autograd: lstm_fused/backends/mhsa.py. Shapes and checks: csrc/mhsa_args.h.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(lstm_fused, m) {
  // out = softmax(scale * q k^T over the keys t < lengths[b]) v, flash-style (the T x T matrix
  // is never written). q, k, v (B, N, T, Dh); lengths (B,) int64 or None (no padding).
  // Returns out (B, N, T, Dh) (zeros for a batch row of length 0) and lse (B, N, T), the
  // log-sum-exp of the scaled scores of each query row (-inf for length 0), in float32
  // (float64 for float64 inputs). dropout_p > 0: attention dropout (training) with the
  // counter-based mask of csrc/attention_dropout.h drawn from seed, a one-element int64 tensor
  // (a tensor, not an int, so that torch.compile can trace a freshly drawn seed); lse stays
  // that of the weights before dropout.
  m.def(
      "mhsa_forward(Tensor q, Tensor k, Tensor v, Tensor? lengths, float scale, "
      "float dropout_p=0.0, Tensor? seed=None) -> (Tensor out, Tensor lse)");
  // Gradients of mhsa_forward from grad_out (B, N, T, Dh) and its saved out and lse (the same
  // dropout_p and seed regenerate the forward's mask).
  m.def(
      "mhsa_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor? lengths, "
      "float scale, float dropout_p, Tensor? seed, Tensor out, Tensor lse) "
      "-> (Tensor grad_q, Tensor grad_k, Tensor grad_v)");
}
