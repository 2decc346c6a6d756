// The CUDA runtime as the kernels and their launchers (csrc/cuda/*.cu, *.cuh) see it: the real
// one, or (LSTM_FUSED_CUDA_EMULATION, tests only) a sequential CPU emulation of kernel launches
// from tests/cuda_emu/, with which tests/test_cuda_emulated.py runs the kernels and the host
// code on the CPU against the reference. No ATen header here: nvcc compiles the .cu files
// without them (the torch headers' host code cost more compile time than the kernels), and the
// host side (tensors, devices, streams) is csrc/cuda/cuda_device_scope.h, used by the .cpp
// files only. Kernels launch through LSTM_FUSED_LAUNCH:
//   LSTM_FUSED_LAUNCH(grid, block, shared_bytes, stream, kernel)(arguments...);
// (the kernel comes last so that a template kernel's commas need no parentheses), or
// LSTM_FUSED_LAUNCH_BLOCKS the same way for kernels that use __syncthreads / shared memory.
#pragma once

#if defined(LSTM_FUSED_CUDA_EMULATION)
#include "cuda_emulation.h"
#else
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
#endif
