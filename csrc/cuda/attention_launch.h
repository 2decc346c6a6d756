// Launchers of the CUDA attention kernels (csrc/cuda/attention_kernels.cuh), called by the host
// code of csrc/cuda/attention_cuda.cpp. Plain C++ with raw pointers and a stream, so nvcc
// compiles the kernels without the torch headers. Defined for float, double, c10::Half and
// c10::BFloat16, one file each (attention_kernels_{f32,f64,f16,bf16}.cu), so the four compile
// in parallel. acc_t = cell_acc_t<scalar_t> (csrc/lstm_cell_math.h): float for float, half and
// bfloat16, double for double, as ATen's opmath type. Layouts: csrc/attention_schemas.h;
// every pointer is to a tensor whose inner dimension has stride 1; lengths (rows,) int64 on the
// device or nullptr (all valid).
#pragma once

#include <cstdint>

#include "cuda/lstm_cuda_runtime.h"  // cudaStream_t
#include "lstm_cell_math.h"          // cell_acc_t

namespace lstm_fused {
namespace cuda {

template <typename scalar_t>
struct PoolingArgs {
  const scalar_t* x;     // (B, T, D), strides xb, xt, 1
  const scalar_t* proj;  // (B, T, A), strides pb, pt, 1
  const scalar_t* v;     // (A,)
  const scalar_t* q;     // (B, A) or nullptr
  const int64_t* lengths;
  int64_t B, T, D, A, xb, xt, pb, pt;
};

template <typename scalar_t>
struct PoolingGrads {
  const scalar_t* gc;             // (B, D)
  const scalar_t* ga;             // (B, T)
  const scalar_t* glse;           // (B,)
  const scalar_t* alpha;          // (B, T)
  const scalar_t* context;        // (B, D)
  scalar_t* gx;                   // (B, T, D)
  scalar_t* gproj;                // (B, T, A)
  cell_acc_t<scalar_t>* de_rows;  // (B, T) scratch
  cell_acc_t<scalar_t>* gv_rows;  // (B, A) per-b partial sums
  cell_acc_t<scalar_t>* gq_rows;  // (B, A)
};

// scores, out (R, N) contiguous; mask (R, N) bool or nullptr.
template <typename scalar_t>
void launch_masked_softmax_forward(const scalar_t* scores, const int64_t* lengths, const bool* mask,
                                   scalar_t* out, int64_t R, int64_t N, double scale,
                                   cudaStream_t stream);

// grad, probs, out (R, N) contiguous.
template <typename scalar_t>
void launch_masked_softmax_backward(const scalar_t* grad, const scalar_t* probs, scalar_t* out,
                                    int64_t R, int64_t N, double scale, cudaStream_t stream);

// context (B, D), alpha (B, T), lse (B,); e_rows (B, max(T, 1)) scratch.
template <typename scalar_t>
void launch_attention_pooling_forward(const PoolingArgs<scalar_t>& a, scalar_t* context,
                                      scalar_t* alpha, scalar_t* lse, cell_acc_t<scalar_t>* e_rows,
                                      cudaStream_t stream);

template <typename scalar_t>
void launch_attention_pooling_backward(const PoolingArgs<scalar_t>& a,
                                       const PoolingGrads<scalar_t>& g, cudaStream_t stream);

// x (B, T, C) strides xb, xt, 1 -> mean (B, C).
template <typename scalar_t>
void launch_masked_mean_forward(const scalar_t* x, const int64_t* lengths, scalar_t* mean,
                                int64_t B, int64_t T, int64_t C, int64_t xb, int64_t xt,
                                cudaStream_t stream);

// grad_mean (B, C) -> grad_x (B, T, C) contiguous.
template <typename scalar_t>
void launch_masked_mean_backward(const scalar_t* grad_mean, const int64_t* lengths,
                                 scalar_t* grad_x, int64_t B, int64_t T, int64_t C,
                                 cudaStream_t stream);

// y (B, T, C) contiguous = x * w[:, None, :] on valid steps; w (B, C).
template <typename scalar_t>
void launch_rescale_forward(const scalar_t* x, const scalar_t* w, const int64_t* lengths,
                            scalar_t* y, int64_t B, int64_t T, int64_t C, int64_t xb, int64_t xt,
                            cudaStream_t stream);

// grad_y, grad_x (B, T, C) contiguous; grad_w (B, C).
template <typename scalar_t>
void launch_rescale_backward(const scalar_t* grad_y, const scalar_t* x, const scalar_t* w,
                             const int64_t* lengths, scalar_t* grad_x, scalar_t* grad_w, int64_t B,
                             int64_t T, int64_t C, int64_t xb, int64_t xt, cudaStream_t stream);

}  // namespace cuda
}  // namespace lstm_fused
