// The sm_90 thread-block-cluster backward time loop of the CUDA LSTM
// (csrc/cuda/lstm_tc_backward_cluster.cuh): its launcher and device plan. Plain C++ with raw
// pointers (no ATen); the arguments are the 1-D loop's (TcBackwardArgs of lstm_tc_backward.h)
// with units = plan.units, ctas = plan.ctas, k_total = plan.k_total and the workspaces sized
// dz_exchange (2, D, 16 * mt, k_total), flags (D, ctas). Instantiated for c10::Half and
// c10::BFloat16.
#pragma once

#include <cstdint>

#include "cuda/lstm_cuda_runtime.h"  // cudaStream_t
#include "cuda/lstm_tc_backward.h"
#include "cuda/lstm_tc_backward_cluster_plan.h"

namespace lstm_fused {
namespace cuda {

// Runs the whole reverse time loop of every direction in one cluster launch (plan.config >= 0):
// writes dz, grad_h0, grad_c0.
template <typename scalar_t>
void launch_tc_backward_cluster(const TcBackwardArgs<scalar_t>& a, const TcClusterPlan& plan,
                                cudaStream_t stream);

// plan_tc_backward_cluster for the device (its SM count and opt-in shared memory; the
// emulation: 64 SMs, 227 KiB), refused also where the device is older than sm_90 or fewer than
// D * clusters clusters can be resident at once (cudaOccupancyMaxActiveClusters).
template <typename scalar_t>
TcClusterPlan plan_tc_backward_cluster_device(int device, int64_t B, int64_t H, int64_t D,
                                              int64_t P);

}  // namespace cuda
}  // namespace lstm_fused
