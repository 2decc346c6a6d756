// Sequential CPU emulation of CUDA kernel launches, for tests only (tests/test_cuda_emulated.py).
//
// Built with -DLSTM_FUSED_CUDA_EMULATION, csrc/cuda/lstm_cuda_runtime.h includes this header
// instead of the CUDA runtime: the kernels of the gate-kernel path become plain C++ functions and
// LSTM_FUSED_LAUNCH runs one call per (block, thread), one after another, with blockIdx /
// threadIdx / blockDim / gridDim set. That is faithful for kernels whose threads neither
// communicate nor synchronise (each writes only its own elements), which is the case of every
// kernel of lstm_gate_kernels.cu. Cooperative launches (the tensor-core time loop,
// lstm_tc_forward.cuh, which uses __syncthreads, warp-collective mma.sync / ldmatrix and flags
// between blocks) run every CUDA thread as an OS thread at the bottom of this file; the
// tensor-core primitives (tc_* at the end) are what csrc/cuda/tc_primitives.cuh calls. Block launches (LSTM_FUSED_LAUNCH_BLOCKS: kernels whose threads share
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

// ---- Cooperative launches: one OS thread per CUDA thread. ----
// Every thread of every block runs at once, so __syncthreads, warp shuffles, warp-collective
// mma / ldmatrix and the grid barrier are real barriers (mutex + condition variable, which also
// order the memory accesses), and a block may wait for a flag another block sets.
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
  // Warp-collective tensor-core operations (tc_* below): each lane parks its operand words
  // (mma: a[4], b[2], c[4] as float bits) or its row address (ldmatrix) here, then the warp
  // meets at the barrier and every lane reads what it needs.
  uint32_t words[32][10];
  const void* rows[32];
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
// All 32 lanes of the warp (the only mask the kernels use).
inline void __syncwarp(unsigned int /*mask: all lanes*/ = 0xffffffffu) {
  lstm_fused_emulation::ctx.warp->barrier.wait();
}

template <typename T>  // float or double (held as double: exact for both)
inline T __shfl_xor_sync(unsigned int /*mask: all lanes*/, T v, int lane_mask) {
  auto& c = lstm_fused_emulation::ctx;
  c.warp->values[c.lane] = v;
  c.warp->barrier.wait();
  const T r = static_cast<T>(c.warp->values[c.lane ^ lane_mask]);
  c.warp->barrier.wait();  // nobody overwrites values before every lane has read
  return r;
}

template <typename T>  // float, double or a 32-bit integer (held as double: exact)
inline T __shfl_sync(unsigned int /*mask: all lanes*/, T v, int src_lane) {
  auto& c = lstm_fused_emulation::ctx;
  c.warp->values[c.lane] = static_cast<double>(v);
  c.warp->barrier.wait();
  const T r = static_cast<T>(c.warp->values[src_lane & 31]);
  c.warp->barrier.wait();
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

// ---- Tensor-core and memory-model primitives (csrc/cuda/tc_primitives.cuh calls these). ----
// mma.sync.m16n8k16 and ldmatrix.x4 are warp-collective: every lane of a cooperative or block
// launch parks its operands in its Warp, the warp meets at the barrier, each lane computes its
// own result registers from the parked words, and the warp meets again before anyone reuses
// the scratch. The fragment layouts are those of the PTX ISA ("Matrix Fragments for
// mma.m16n8k16 with floating point type", "Warp-level matrix load instruction: ldmatrix"):
// groupID g = lane >> 2, threadID_in_group t = lane & 3, two 16-bit values per 32-bit register,
// the lower column (or k) index in the low half:
//   A (16 x 16, row): reg 0 (g, 2t..2t+1), reg 1 (g+8, 2t..), reg 2 (g, 2t+8..), reg 3 (g+8, 2t+8..)
//   B (16 x 8, col):  reg 0 (k = 2t..2t+1, n = g), reg 1 (k = 2t+8..2t+9, n = g)
//   C, D (16 x 8, f32): d0, d1 (g, 2t), (g, 2t+1); d2, d3 (g+8, 2t), (g+8, 2t+1)
// tests/test_tc_emulation.py checks these against an independent transcription of the PTX
// figures. Products of 16-bit values are exact in double; the sum is rounded to float once,
// which differs from the hardware's accumulation order by a few float ulps (tests keep a
// tolerance).
#include <atomic>
#include <cstring>

namespace lstm_fused_emulation {

inline float tc_bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint32_t tc_float_to_bits(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

inline float tc_bf16_to_float(uint16_t h) { return tc_bits_to_float(static_cast<uint32_t>(h) << 16); }

// IEEE binary16 -> float (exact: every half is a float).
inline float tc_f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const int exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return tc_bits_to_float(sign | 0x7f800000u | (mant << 13));  // inf / NaN
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return tc_bits_to_float(sign | static_cast<uint32_t>(exp - 15 + 127) << 23 | (mant << 13));
}

// The 16-bit element `half` (0: low, 1: high) of a 32-bit register, as float.
inline float tc_elem(uint32_t reg, int half, bool bf16) {
  const uint16_t h = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);
  return bf16 ? tc_bf16_to_float(h) : tc_f16_to_float(h);
}

// d = A B + C for one warp; bf16 or f16 operands, f32 accumulators.
inline void tc_mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                         bool bf16) {
  auto& x = ctx;
  uint32_t* mine = x.warp->words[x.lane];
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  for (int i = 0; i < 2; ++i) mine[4 + i] = b[i];
  for (int i = 0; i < 4; ++i) mine[6 + i] = tc_float_to_bits(c[i]);
  x.warp->barrier.wait();
  const int g = x.lane >> 2, t = x.lane & 3;
  float out[4];
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
    double acc = 0.0;
    for (int k = 0; k < 16; ++k) {
      // A(row, k) lives in lane 4*(row % 8) + (k % 8)/2, register (row >= 8) + 2*(k >= 8);
      // B(k, col) in lane 4*col + (k % 8)/2, register (k >= 8); element k % 2 of each.
      const uint32_t a_reg = x.warp->words[4 * (row % 8) + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)];
      const uint32_t b_reg = x.warp->words[4 * col + (k % 8) / 2][4 + (k >= 8)];
      acc += static_cast<double>(tc_elem(a_reg, k % 2, bf16)) *
             static_cast<double>(tc_elem(b_reg, k % 2, bf16));
    }
    out[i] = static_cast<float>(acc + static_cast<double>(c[i]));
  }
  x.warp->barrier.wait();  // nobody overwrites the scratch before every lane has read it
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}

// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16: lane l supplies the address of row l % 8
// of matrix l / 8 (8 consecutive 16-bit values). Without .trans register j of lane l receives
// matrix j's row l / 4, elements 2(l % 4) and 2(l % 4) + 1; with .trans, column l / 4,
// elements (rows) 2(l % 4) and 2(l % 4) + 1.
inline void tc_ldmatrix_x4(uint32_t r[4], const void* row_ptr, bool trans) {
  auto& x = ctx;
  x.warp->rows[x.lane] = row_ptr;
  x.warp->barrier.wait();
  const int l = x.lane;
  uint32_t out[4];
  for (int j = 0; j < 4; ++j) {
    uint16_t lo, hi;
    if (!trans) {
      const auto* row = static_cast<const uint16_t*>(x.warp->rows[8 * j + l / 4]);
      lo = row[2 * (l % 4)];
      hi = row[2 * (l % 4) + 1];
    } else {
      const auto* r0 = static_cast<const uint16_t*>(x.warp->rows[8 * j + 2 * (l % 4)]);
      const auto* r1 = static_cast<const uint16_t*>(x.warp->rows[8 * j + 2 * (l % 4) + 1]);
      lo = r0[l / 4];
      hi = r1[l / 4];
    }
    out[j] = static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
  }
  x.warp->barrier.wait();
  for (int j = 0; j < 4; ++j) r[j] = out[j];
}

// Flags: acquire loads and release stores are C++ atomics on the flag word. A thread that waits
// for a flag spins (yielding, then sleeping) at most tc_spin_timeout_ms, then reports and
// aborts: on a GPU that would be a hang (a producer that never publishes, a wrong step value).
inline std::atomic<long> tc_spin_timeout_ms{120000};

inline unsigned tc_ld_acquire(const unsigned* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

inline void tc_st_release(unsigned* p, unsigned v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

inline void tc_wait_geq_acquire(const unsigned* p, unsigned v) {
  const auto start = std::chrono::steady_clock::now();
  for (long spins = 0;; ++spins) {
    if (tc_ld_acquire(p) >= v) return;
    if (spins < 64) {
      std::this_thread::yield();
      continue;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (waited.count() > tc_spin_timeout_ms.load()) {
      std::fprintf(stderr,
                   "cuda emulation: block %u thread %u waited %ld ms for a flag to reach %u "
                   "(it holds %u)\n",
                   blockIdx.x, threadIdx.x, static_cast<long>(waited.count()), v, tc_ld_acquire(p));
      std::abort();
    }
  }
}

}  // namespace lstm_fused_emulation
