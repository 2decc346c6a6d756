// The tensor-core backward time loop of the CUDA LSTM (csrc/cuda/lstm_tc_backward.cuh): its
// arguments and launcher, called by the host code of lstm_layer_cuda.cpp. Plain C++ with raw
// pointers (no ATen), like lstm_cuda_kernels.h. Instantiated for c10::Half and c10::BFloat16.
// Dimension letters: csrc/lstm_cell_math.h; plan: lstm_tc_backward_plan.h.
#pragma once

#include <cstdint>

#include "cuda/lstm_cuda_runtime.h"  // cudaStream_t
#include "cuda/lstm_tc_backward_plan.h"

namespace lstm_fused {
namespace cuda {

template <typename scalar_t>
struct TcBackwardArgs {
  const scalar_t* gates;     // (D, T, B, G) activated gates saved by the forward
  const scalar_t* cells;     // (D, T, B, H) c_t saved by the forward
  const scalar_t* c0;        // (D, B, H)
  const scalar_t* w_hh;      // (D, G, H) contiguous
  const scalar_t* peep;      // (D, 3, H) or nullptr
  const int64_t* lengths;    // (B,) or nullptr (every step valid)
  const bool* resets;        // (T, B) or nullptr (no resets)
  const scalar_t* grad_y;    // (T, B, D*H)
  const scalar_t* grad_h_n;  // (D, B, H)
  const scalar_t* grad_c_n;  // (D, B, H)
  scalar_t* dz;              // (T, B, D, G) out: gradient of the pre-activations
  scalar_t* grad_h0;         // (D, B, H) out
  scalar_t* grad_c0;         // (D, B, H) out
  // Workspaces, zeroed by the host before the launch:
  scalar_t* dz_exchange;  // (2, D, 16 * mt, k_total): dz rows of a step in producer order
  unsigned* flags;        // (D, ctas): the number of steps each CTA has published
  int64_t T, B, H, D;
  int units, ctas, k_total;  // the plan's
};

// Runs the whole reverse time loop of every direction in one cooperative launch (plan.config
// >= 0): writes dz, grad_h0, grad_c0.
template <typename scalar_t>
void launch_tc_backward(const TcBackwardArgs<scalar_t>& a, const TcBackwardPlan& plan,
                        cudaStream_t stream);

// plan_tc_backward for the device (its SM count and opt-in shared memory; the emulation: a
// device with room for every test grid), refused also where the device has no cooperative
// launch, is older than sm_80, or the occupancy calculator finds no room for one CTA per SM.
template <typename scalar_t>
TcBackwardPlan plan_tc_backward_device(int device, int64_t B, int64_t H, int64_t D, int64_t P);

}  // namespace cuda
}  // namespace lstm_fused
