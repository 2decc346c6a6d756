// Host side of a CUDA op (the .cpp files of csrc/cuda/ only, never nvcc): the device of a
// tensor made current for the scope, the stream the launchers get, and the device's per-block
// opt-in shared memory limit, against which the host checks a launch plan before launching.
// Under the CPU launch emulation (LSTM_FUSED_CUDA_EMULATION, tests/cuda_emu/) the tensors are on
// the CPU and the launches run in order, so the scope does nothing and the stream is null.
#pragma once

#include <cstddef>

#include "cuda/lstm_cuda_runtime.h"

#if defined(LSTM_FUSED_CUDA_EMULATION)
namespace lstm_fused {
struct DeviceScope {
  template <typename Tensor>
  explicit DeviceScope(const Tensor&) {}
  cudaStream_t stream() const { return nullptr; }
};
// The emulated device has the per-block opt-in limit of sm_80 (A100), 163 KiB, so the host
// code takes the decisions it takes on the smallest GPU the build targets.
template <typename Device>
size_t device_smem_optin(const Device&) {
  return 166912;
}
}  // namespace lstm_fused
#else
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
namespace lstm_fused {
struct DeviceScope {
  explicit DeviceScope(const at::Tensor& t) : guard(t.device()) {}
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(); }
  c10::cuda::CUDAGuard guard;
};
inline size_t device_smem_optin(const c10::Device& device) {
  int bytes = 0;
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device.index()));
  return static_cast<size_t>(bytes);
}
}  // namespace lstm_fused
#endif
