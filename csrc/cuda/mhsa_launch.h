// Launchers of the CUDA self-attention kernels (csrc/cuda/mhsa_kernels.cuh), called by the host
// code of csrc/cuda/mhsa_cuda.cpp. Plain C++ with raw pointers and a stream (nvcc compiles the
// kernels without the torch headers). Defined for float, double, c10::Half and c10::BFloat16,
// and head-size bound, one file each (mhsa_kernels_<dtype>_d<MAX_D>.cu), compiled in parallel.
//   q, k, v, out, dout, dq, dk, dv (B, N, T, Dh) contiguous; lse, delta (B, N, T) in acc_t =
//   cell_acc_t<scalar_t> (float, or double for double); lengths (B,) int64 or nullptr.
// The plan (csrc/cuda/mhsa_plan.h) must fit the device (the host checks it).
#pragma once

#include <cstdint>
#include <type_traits>

#include "attention_dropout.h"
#include "cuda/lstm_cuda_runtime.h"  // cudaStream_t
#include "cuda/mhsa_plan.h"
#include "lstm_cell_math.h"  // cell_acc_t

namespace lstm_fused {
namespace cuda {

template <typename scalar_t>
struct MhsaForwardParams {
  using acc_t = cell_acc_t<scalar_t>;
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const int64_t* lengths;
  scalar_t* out;
  acc_t* lse;
  int64_t B, N, T;
  int Dh;
  acc_t scale;
  AttentionDropout drop;
};

template <typename scalar_t>
struct MhsaBackwardParams {
  using acc_t = cell_acc_t<scalar_t>;
  const scalar_t* q;
  const scalar_t* k;
  const scalar_t* v;
  const scalar_t* dout;
  const scalar_t* out;
  const acc_t* lse;
  const int64_t* lengths;
  acc_t* delta;  // scratch: delta_i = dO_i . O_i
  scalar_t* dq;
  scalar_t* dk;
  scalar_t* dv;
  int64_t B, N, T;
  int Dh;
  acc_t scale;
  AttentionDropout drop;
  acc_t keep_scale;  // drop.keep_scale in acc_t (1 without dropout)
};

// MAX_D = plan.max_d (32, 64 or 128): the instantiation for head sizes Dh <= MAX_D.
template <typename scalar_t, int MAX_D>
void launch_mhsa_forward(const MhsaForwardParams<scalar_t>& a, const MhsaPlan& plan,
                         cudaStream_t stream);

template <typename scalar_t, int MAX_D>
void launch_mhsa_backward(const MhsaBackwardParams<scalar_t>& a, const MhsaPlan& plan,
                          cudaStream_t stream);

// Calls f(std::integral_constant<int, MAX_D>()) for the plan's head-size bound.
template <typename F>
void dispatch_max_d(int max_d, F&& f) {
  if (max_d == 32) {
    f(std::integral_constant<int, 32>());
  } else if (max_d == 64) {
    f(std::integral_constant<int, 64>());
  } else {
    f(std::integral_constant<int, 128>());
  }
}

}  // namespace cuda
}  // namespace lstm_fused
