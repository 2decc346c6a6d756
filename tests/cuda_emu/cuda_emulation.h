// Sequential CPU emulation of CUDA kernel launches, for tests only (tests/test_cuda_emulated.py).
//
// Built with -DLSTM_FUSED_CUDA_EMULATION, csrc/cuda/lstm_cuda_runtime.h includes this header
// instead of the CUDA runtime: the kernels of the gate-kernel path become plain C++ functions and
// LSTM_FUSED_LAUNCH runs one call per (block, thread), one after another, with blockIdx /
// threadIdx / blockDim / gridDim set. That is faithful for kernels whose threads neither
// communicate nor synchronise (each writes only its own elements), which is the case of every
// kernel of lstm_gate_kernels.cu; it cannot run kernels that use __syncthreads, warp shuffles
// or a grid barrier (the persistent kernels), and they are not built in this mode.
#pragma once

#include <cstdint>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

typedef struct CUstream_st* cudaStream_t;

struct dim3 {
  unsigned int x, y, z;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 gridDim, blockDim, blockIdx(0), threadIdx(0);

namespace lstm_fused_emulation {

template <typename Kernel>
struct Launch {
  dim3 grid, block;
  Kernel* kernel;
  template <typename... Args>
  void operator()(const Args&... args) const {
    gridDim = grid;
    blockDim = block;
    for (unsigned int bz = 0; bz < grid.z; ++bz)
      for (unsigned int by = 0; by < grid.y; ++by)
        for (unsigned int bx = 0; bx < grid.x; ++bx)
          for (unsigned int tz = 0; tz < block.z; ++tz)
            for (unsigned int ty = 0; ty < block.y; ++ty)
              for (unsigned int tx = 0; tx < block.x; ++tx) {
                blockIdx = dim3(bx, by, bz);
                threadIdx = dim3(tx, ty, tz);
                kernel(args...);
              }
  }
};

template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, Kernel* kernel) {
  return Launch<Kernel>{grid, block, kernel};
}

}  // namespace lstm_fused_emulation

#define LSTM_FUSED_LAUNCH(grid, block, shared_bytes, stream, ...) \
  ::lstm_fused_emulation::launch(dim3(grid), dim3(block), &__VA_ARGS__)
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)
