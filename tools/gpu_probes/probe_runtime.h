// The few runtime pieces the GPU probes (tools/gpu_probes/*.cu) need, in the two worlds:
//   nvcc:                          the CUDA runtime (no torch, no c10: the probes build with
//                                  nvcc alone in seconds on the device machine);
//   LSTM_FUSED_CUDA_EMULATION:     tests/cuda_emu/cuda_emulation.h (g++ on the CPU): device
//                                  memory is host memory, a launch runs every CUDA thread as an
//                                  OS thread (the emulation's cooperative launch), so warps and
//                                  blocks meet at real barriers and the flags are real atomics.
// The tensor-core and flag wrappers themselves come from csrc/cuda/tc_primitives.cuh, the one
// header where the two worlds differ for the kernels; this file only adds memory, launches and
// timing for the probes' host code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(LSTM_FUSED_CUDA_EMULATION)
#include <chrono>
#include <thread>

#include "cuda_emulation.h"

#define PROBE_DYNAMIC_SHARED(name) LSTM_FUSED_DYNAMIC_SHARED(name)
#define PROBE_EMULATED 1

namespace probe {

inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "probe: %s failed\n", what);
    std::exit(3);
  }
}

template <typename T>
T* device_alloc(size_t n) {
  void* p = std::calloc(n ? n : 1, sizeof(T));
  check(p != nullptr, "allocation");
  return static_cast<T*>(p);
}
template <typename T>
void device_free(T* p) { std::free(p); }
template <typename T>
void to_device(T* dst, const T* src, size_t n) { std::memcpy(dst, src, n * sizeof(T)); }
template <typename T>
void to_host(T* dst, const T* src, size_t n) { std::memcpy(dst, src, n * sizeof(T)); }
template <typename T>
void device_zero(T* p, size_t n) { std::memset(p, 0, n * sizeof(T)); }

// Every thread of every block at once (co-resident by construction).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem,
            const Args&... args) {
  lstm_fused_emulation::launch_cooperative(kernel, dim3(blocks), dim3(threads), smem, args...);
}

// A spinning OS thread hands the core to the threads it waits for (and sleeps once it has
// waited a while: hundreds of OS threads share two cores).
inline void relax(long long polls) {
  if (polls < 64)
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(100));
}

inline void grid_sync() { cooperative_groups::this_grid().sync(); }

inline unsigned atomic_add(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
inline unsigned atomic_or(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_RELAXED); }

}  // namespace probe

#else  // nvcc
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#define PROBE_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#define PROBE_EMULATED 0

namespace probe {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "probe: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(3);
  }
}
inline void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "probe: %s failed\n", what);
    std::exit(3);
  }
}

template <typename T>
T* device_alloc(size_t n) {
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, (n ? n : 1) * sizeof(T)), "cudaMalloc");
  check_cuda(cudaMemset(p, 0, (n ? n : 1) * sizeof(T)), "cudaMemset");
  return static_cast<T*>(p);
}
template <typename T>
void device_free(T* p) { check_cuda(cudaFree(p), "cudaFree"); }
template <typename T>
void to_device(T* dst, const T* src, size_t n) {
  check_cuda(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
}
template <typename T>
void to_host(T* dst, const T* src, size_t n) {
  check_cuda(cudaMemcpy(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
}
template <typename T>
void device_zero(T* p, size_t n) { check_cuda(cudaMemset(p, 0, n * sizeof(T)), "cudaMemset"); }

// A plain launch, checked (the probes that need co-residency use cudaLaunchCooperativeKernel).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem,
            const Args&... args) {
  kernel<<<blocks, threads, smem>>>(args...);
  check_cuda(cudaGetLastError(), "kernel launch");
  check_cuda(cudaDeviceSynchronize(), "kernel run");
}

__device__ __forceinline__ void relax(long long) {}  // a GPU spins

__device__ __forceinline__ void grid_sync() { cooperative_groups::this_grid().sync(); }

__device__ __forceinline__ unsigned atomic_add(unsigned* p, unsigned v) { return atomicAdd(p, v); }
__device__ __forceinline__ unsigned atomic_or(unsigned* p, unsigned v) { return atomicOr(p, v); }

}  // namespace probe
#endif

namespace probe {

// Deterministic pseudo-random numbers (splitmix64): the GPU build and the emulated build of a
// probe draw the very same inputs from the same seed.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform_int(int lo, int hi) {  // [lo, hi]
    return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
};

// Exact conversions for the values the probes draw (|v| < 2^8, multiples of 2^-7 with at most
// 8 significant bits): representable in bf16 and fp16 alike, so no rounding mode is involved.
inline uint16_t float_to_bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint16_t>(u >> 16);  // exact for the values drawn (low half is zero)
}
inline uint16_t float_to_f16_bits(float v) {
  if (v == 0.0f) return 0;
  uint32_t u;
  std::memcpy(&u, &v, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int exp = static_cast<int>((u >> 23) & 0xFF) - 127 + 15;  // normal range for |v| >= 2^-14
  const uint32_t mant = (u >> 13) & 0x3FFu;                         // exact: low 13 bits are zero
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(exp) << 10) | mant);
}

}  // namespace probe
