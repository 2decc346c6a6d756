// The CUDA runtime as the LSTM kernels see it: the real one, or (LSTM_FUSED_CUDA_EMULATION,
// tests only) a sequential CPU emulation of kernel launches from tests/cuda_emu/, with which
// tests/test_cuda_emulated.py runs the kernels and the host code of the gate-kernel path on
// the CPU against the reference. Kernels launch through LSTM_FUSED_LAUNCH:
//   LSTM_FUSED_LAUNCH(grid, block, shared_bytes, stream, kernel)(arguments...);
// (the kernel comes last so that a template kernel's commas need no parentheses), or
// LSTM_FUSED_LAUNCH_BLOCKS the same way for kernels that use __syncthreads / shared memory.
#pragma once

#if defined(LSTM_FUSED_CUDA_EMULATION)
#include "cuda_emulation.h"
namespace lstm_fused {
struct DeviceScope {  // emulation: CPU tensors, launches run in order
  template <typename Tensor>
  explicit DeviceScope(const Tensor&) {}
  cudaStream_t stream() const { return nullptr; }
};
}  // namespace lstm_fused
#else
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <cooperative_groups.h>
#include <cuda_runtime.h>
// The dynamic shared memory of a kernel, as a byte array named `name`.
#define LSTM_FUSED_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
// A static shared array `type name[count]` of a block.
#define LSTM_FUSED_STATIC_SHARED(type, name, count) __shared__ type name[count]
#define LSTM_FUSED_LAUNCH(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<(grid), (block), (shared_bytes), (stream)>>>
// The same for kernels whose threads share memory and meet at __syncthreads (emulated with
// the threads of a block running at once).
#define LSTM_FUSED_LAUNCH_BLOCKS(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<(grid), (block), (shared_bytes), (stream)>>>
namespace lstm_fused {
// The device of a tensor made current for the scope, and its current stream.
struct DeviceScope {
  explicit DeviceScope(const at::Tensor& t) : guard(t.device()) {}
  cudaStream_t stream() const { return c10::cuda::getCurrentCUDAStream(); }
  c10::cuda::CUDAGuard guard;
};
}  // namespace lstm_fused
#endif
