// Sequential CPU emulation of CUDA kernel launches, for tests only (tests/test_cuda_emulated.py).
//
// Built with -DLSTM_FUSED_CUDA_EMULATION, csrc/cuda/lstm_cuda_runtime.h includes this header
// instead of the CUDA runtime: the kernels of the gate-kernel path become plain C++ functions and
// LSTM_FUSED_LAUNCH runs one call per (block, thread), one after another, with blockIdx /
// threadIdx / blockDim / gridDim set. That is faithful for kernels whose threads neither
// communicate nor synchronise (each writes only its own elements), which is the case of every
// kernel of lstm_gate_kernels.cu. Cooperative launches (the persistent kernels, which use
// __syncthreads, warp shuffles and a grid barrier) run every CUDA thread as an OS thread at the
// bottom of this file. Block launches (LSTM_FUSED_LAUNCH_BLOCKS: kernels whose threads share
// memory and meet at __syncthreads, e.g. the attention kernels) run the blocks one after
// another, the threads of each block as OS threads at once. None models the CUDA memory
// model's weaker orderings (L1 staleness, missing fences): races of that kind are for
// compute-sanitizer on a GPU.
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

// ---- Cooperative launches (the persistent kernels): one OS thread per CUDA thread. ----
// Every thread of every block runs at once, so __syncthreads, warp shuffles and the grid barrier
// are real barriers (mutex + condition variable, which also order the memory accesses).
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __align__(n) alignas(n)
#define LSTM_FUSED_DYNAMIC_SHARED(name) \
  unsigned char* name = ::lstm_fused_emulation::ctx.block->smem.data()
// A static shared array: allocated per block at its first use (keyed by the declaration),
// 0xFF-poisoned like the dynamic part, the same pointer for every thread of the block.
#define LSTM_FUSED_STATIC_SHARED(type, name, count)                                   \
  static const char name##_site = 0;                                                  \
  type* name = static_cast<type*>(                                                    \
      ::lstm_fused_emulation::ctx.block->static_shared(&name##_site, sizeof(type) * (count)))

using std::max;
using std::min;

namespace lstm_fused_emulation {

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(m_);
    const long generation = generation_;
    if (++count_ == n_) {
      count_ = 0;
      ++generation_;
      cv_.notify_all();
    } else if (!cv_.wait_for(lock, std::chrono::seconds(120),
                             [&] { return generation_ != generation; })) {
      // On a GPU this is a hang or undefined behaviour: a thread that left before a
      // __syncthreads, a barrier in divergent code, a shuffle in a partial warp.
      std::fprintf(stderr, "cuda emulation: %d of %d threads waited 120 s at a barrier\n",
                   count_, n_);
      std::abort();
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0;
  long generation_ = 0;
};

struct Warp {
  Barrier barrier{32};
  double values[32];
};

struct Block {
  // Dynamic shared memory starts as 0xFF bytes (NaN in float and double), like the garbage a
  // GPU leaves there, so a kernel that reads what it did not write fails the comparisons.
  Block(int threads, size_t smem_bytes) : barrier(threads), smem(smem_bytes + 16, 0xFF) {
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.emplace_back(new Warp());
  }
  // The static shared array declared at `site`, allocated and poisoned at its first use.
  void* static_shared(const void* site, size_t bytes) {
    std::lock_guard<std::mutex> lock(static_mutex);
    auto& buf = static_arrays[site];
    if (buf.empty()) buf.assign(bytes + 16, 0xFF);
    return buf.data();
  }
  Barrier barrier;
  std::vector<unsigned char> smem;
  std::vector<std::unique_ptr<Warp>> warps;
  std::mutex static_mutex;
  std::map<const void*, std::vector<unsigned char>> static_arrays;
};

struct ThreadContext {
  Block* block = nullptr;
  Warp* warp = nullptr;
  Barrier* grid = nullptr;
  int lane = 0;
};

inline thread_local ThreadContext ctx;

// Runs kernel(args...) on grid.x blocks of block.x threads (block.x a multiple of 32).
template <typename... Params, typename... Args>
void launch_cooperative(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes,
                        const Args&... args) {
  const int blocks = static_cast<int>(grid.x), threads = static_cast<int>(block.x);
  Barrier grid_barrier(blocks * threads);
  std::vector<std::unique_ptr<Block>> state;
  for (int b = 0; b < blocks; ++b) state.emplace_back(new Block(threads, smem_bytes));
  std::vector<std::thread> workers;
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < threads; ++t)
      workers.emplace_back([&, b, t] {
        gridDim = grid;
        blockDim = block;
        blockIdx = dim3(b);
        threadIdx = dim3(t);
        ctx = ThreadContext{state[b].get(), state[b]->warps[t / 32].get(), &grid_barrier, t % 32};
        kernel(args...);
      });
  for (auto& w : workers) w.join();
}

}  // namespace lstm_fused_emulation

inline void __syncthreads() { lstm_fused_emulation::ctx.block->barrier.wait(); }

template <typename T>  // float or double (held as double: exact for both)
inline T __shfl_xor_sync(unsigned int /*mask: all lanes*/, T v, int lane_mask) {
  auto& c = lstm_fused_emulation::ctx;
  c.warp->values[c.lane] = v;
  c.warp->barrier.wait();
  const T r = static_cast<T>(c.warp->values[c.lane ^ lane_mask]);
  c.warp->barrier.wait();  // nobody overwrites values before every lane has read
  return r;
}

template <typename T>
inline T __ldcg(const T* p) {
  return *p;
}

namespace cooperative_groups {
struct grid_group {
  void sync() { lstm_fused_emulation::ctx.grid->wait(); }
};
inline grid_group this_grid() { return grid_group{}; }
}  // namespace cooperative_groups

// ---- Block launches: blocks in turn, the threads of a block at once (real __syncthreads). ----
namespace lstm_fused_emulation {

template <typename... Params>
struct BlockLaunch {
  dim3 grid, block;
  size_t smem_bytes;
  void (*kernel)(Params...);
  template <typename... Args>
  void operator()(const Args&... args) const {
    const int threads = static_cast<int>(block.x * block.y * block.z);
    for (unsigned int bz = 0; bz < grid.z; ++bz)
      for (unsigned int by = 0; by < grid.y; ++by)
        for (unsigned int bx = 0; bx < grid.x; ++bx) {
          Block state(threads, smem_bytes);
          std::vector<std::thread> workers;
          for (int t = 0; t < threads; ++t)
            workers.emplace_back([&, t] {
              gridDim = grid;
              blockDim = block;
              blockIdx = dim3(bx, by, bz);
              threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
              ctx = ThreadContext{&state, state.warps[t / 32].get(), nullptr, t % 32};
              kernel(args...);
            });
          for (auto& w : workers) w.join();
        }
  }
};

template <typename... Params>
BlockLaunch<Params...> block_launch(dim3 grid, dim3 block, size_t smem_bytes,
                                    void (*kernel)(Params...)) {
  return BlockLaunch<Params...>{grid, block, smem_bytes, kernel};
}

}  // namespace lstm_fused_emulation

#define LSTM_FUSED_LAUNCH_BLOCKS(grid, block, shared_bytes, stream, ...) \
  ::lstm_fused_emulation::block_launch(dim3(grid), dim3(block), (shared_bytes), &__VA_ARGS__)
