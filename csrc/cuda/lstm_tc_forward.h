// The tensor-core forward time loop of the CUDA LSTM (lstm_tc_forward.cuh), as the host code
// (lstm_layer_cuda.cpp) calls it: arguments, plan, launch. Plain C++ with raw pointers, like
// lstm_cuda_kernels.h. bfloat16 and float16 storage (c10::BFloat16, c10::Half), float
// accumulation; no projection. Shapes: csrc/lstm_cell_math.h's letters, G = 4H.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "cuda/lstm_cuda_runtime.h"  // cudaStream_t

namespace lstm_fused {
namespace cuda {

template <typename scalar_t>
struct TcForwardParams {
  const scalar_t* gx;      // (T, B, D, G) x W_ih^T + bias of every step
  const scalar_t* w_hh;    // (D, G, H)
  const scalar_t* h0;      // (D, B, H)
  const scalar_t* c0;      // (D, B, H)
  const scalar_t* peep;    // (D, 3, H) or nullptr
  const int64_t* lengths;  // (B,) or nullptr: row b is valid at time t when t < lengths[b]
  const bool* resets;      // (T, B) or nullptr: the state of row b goes back to (h0, c0)
                           // before time t (direction 0) or before t - 1 (direction 1)
                           // where resets[t, b] is set (csrc/lstm_layer_args.h)
  scalar_t* y;             // (T, B, D*H) out, zero at padded steps
  scalar_t* h_n;           // (D, B, H) out
  scalar_t* c_n;           // (D, B, H) out
  scalar_t* gates;         // (D, T, B, G) out (activated, zero at padded steps) or nullptr
  scalar_t* cells;         // (D, T, B, H) out (carried through padded steps) or nullptr
  scalar_t* h_exchange;    // (2, D, B, H) workspace: h of the two last steps
  unsigned* flags;         // (D * ctas per direction * kTcFlagStride) workspace, zeroed
  int64_t T, B, H, D;
};

struct TcForwardPlan {
  bool fits = false;
  int config = -1;  // index into tc_forward_configs() (lstm_tc_plan.h)
  int ctas = 0;     // D * ceil(H / units)
  int threads = 0;
  size_t smem = 0;        // dynamic shared memory per CTA, bytes
  size_t flag_words = 0;  // unsigned words of the flags workspace
  std::string reason;     // why it does not fit ("" when it does)
};

// The configuration for (B, H, D, P) on `device` (shared memory, cooperative launch, all CTAs
// co-resident per cudaOccupancyMaxActiveBlocksPerMultiprocessor), or fits = false and reason.
template <typename scalar_t>
TcForwardPlan plan_tc_forward(int device, int64_t B, int64_t H, int64_t D, int64_t P);

template <typename scalar_t>
void launch_tc_forward(const TcForwardParams<scalar_t>& p, const TcForwardPlan& plan,
                       cudaStream_t stream);

}  // namespace cuda
}  // namespace lstm_fused
