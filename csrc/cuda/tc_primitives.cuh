// The tensor-core and memory-model primitives of the CUDA time-loop kernels (lstm_tc_*), in one
// place: inline PTX under nvcc (sm_80 and newer), and, built with LSTM_FUSED_CUDA_EMULATION,
// the CPU emulation of tests/cuda_emu/cuda_emulation.h (warp-collective mma and ldmatrix through
// per-warp scratch and warp barriers, flags as C++ atomics with a bounded spin, cp.async as a
// plain copy). This is the only file where the two worlds differ. No ATen or torch header.
//
// Fragments are those of the PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type": groupID g = lane >> 2, threadID_in_group t = lane & 3; each uint32_t holds two 16-bit
// values, the lower column (or k) index in the low half.
//   A (16 x 16, row-major): a[0] (g, 2t..2t+1), a[1] (g+8, 2t..), a[2] (g, 2t+8..), a[3] (g+8,
//   2t+8..) B (16 x 8, "col": element (k, n)): b[0] (k = 2t..2t+1, n = g), b[1] (k = 2t+8..2t+9, n
//   = g) C, D (16 x 8, float): [0] (g, 2t), [1] (g, 2t+1), [2] (g+8, 2t), [3] (g+8, 2t+1)
// ldmatrix_x4: lane l gives the address (16-byte aligned, shared memory) of row l % 8 of matrix
// l / 8; register j receives matrix j's row l / 4, elements 2(l % 4), 2(l % 4) + 1 (.trans:
// column l / 4, rows 2(l % 4), 2(l % 4) + 1). So with matrices (rows 0-7, cols 0-7),
// (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15) of a row-major 16 x 16
// tile, r[0..3] is exactly the A fragment above.
// Flags: a producer publishes with st_release_gpu (after its data stores); a consumer waits with
// wait_geq_acquire, then reads the data (through L2: cp_async_16 or ld.global.cg, never a
// possibly stale L1 line). Step-valued flags only grow, so ">=" is the test.
#pragma once

#include <cstdint>

#if defined(LSTM_FUSED_CUDA_EMULATION)
#include "cuda_emulation.h"
#endif

namespace c10 {
struct Half;
struct BFloat16;
}  // namespace c10

namespace lstm_fused {
namespace cuda {
namespace tc {

#if defined(LSTM_FUSED_CUDA_EMULATION)

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                               const float c[4]) {
  ::lstm_fused_emulation::tc_mma_16816(d, a, b, c, /*bf16=*/true);
}

__device__ __forceinline__ void mma_f16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                              const float c[4]) {
  ::lstm_fused_emulation::tc_mma_16816(d, a, b, c, /*bf16=*/false);
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row_ptr_smem) {
  ::lstm_fused_emulation::tc_ldmatrix_x4(r, row_ptr_smem, /*trans=*/false);
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row_ptr_smem) {
  ::lstm_fused_emulation::tc_ldmatrix_x4(r, row_ptr_smem, /*trans=*/true);
}

__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
  return ::lstm_fused_emulation::tc_ld_acquire(p);
}

__device__ __forceinline__ void st_release_gpu(unsigned* p, unsigned v) {
  ::lstm_fused_emulation::tc_st_release(p, v);
}

__device__ __forceinline__ void wait_geq_acquire(const unsigned* p, unsigned v) {
  ::lstm_fused_emulation::tc_wait_geq_acquire(p, v);
}

// As on a GPU, both addresses must be 16-byte aligned (else "misaligned address").
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
  if (reinterpret_cast<uintptr_t>(smem_dst) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(gmem_src) % 16 != 0)
    ::lstm_fused_emulation::report_launch_error(
        "cp.async with an address that is not 16-byte aligned");
  std::memcpy(smem_dst, gmem_src, 16);
}
__device__ __forceinline__ void cp_async_commit() {}
__device__ __forceinline__ void cp_async_wait_all() {}

#else  // nvcc

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                               const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void mma_f16_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                              const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row_ptr_smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row_ptr_smem)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row_ptr_smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row_ptr_smem)));
}

__device__ __forceinline__ unsigned ld_acquire_gpu(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void st_release_gpu(unsigned* p, unsigned v) {
  asm volatile("st.release.gpu.global.u32 [%0], %1;\n" : : "l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ void wait_geq_acquire(const unsigned* p, unsigned v) {
  while (ld_acquire_gpu(p) < v) {
  }
}

// 16 bytes global -> shared, cached in L2 only (.cg): both addresses 16-byte aligned.
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n"
               :
               : "r"(smem_address(smem_dst)), "l"(gmem_src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" : : : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" : : : "memory");
}

#endif

// The mma of the 16-bit storage type T16 (c10::BFloat16 or c10::Half).
template <typename T16>
struct Mma16816;
template <>
struct Mma16816<c10::BFloat16> {
  __device__ __forceinline__ static void run(float d[4], const uint32_t a[4], const uint32_t b[2],
                                             const float c[4]) {
    mma_bf16_16816(d, a, b, c);
  }
};
template <>
struct Mma16816<c10::Half> {
  __device__ __forceinline__ static void run(float d[4], const uint32_t a[4], const uint32_t b[2],
                                             const float c[4]) {
    mma_f16_16816(d, a, b, c);
  }
};

template <typename T16>
__device__ __forceinline__ void mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2],
                                          const float c[4]) {
  Mma16816<T16>::run(d, a, b, c);
}

// ---- Thread-block clusters (sm_90 and newer only; emulated by launch_cluster). ----
// cluster_ctarank(): the block's rank in its cluster (0 .. cluster_nctarank() - 1).
// cluster_arrive() / cluster_wait(): barrier.cluster.arrive.release / wait.acquire over every
// thread of the cluster (all threads of a warp call them together: .aligned); cluster_sync() is
// both. Writes to (distributed) shared memory before a thread's arrive are visible to every
// thread of the cluster after its wait.
// map_shared_rank(p, rank): the generic address of the same shared-memory location as p (a
// pointer into the calling block's shared memory) in block `rank` of the cluster (mapa); plain
// loads and stores through it are distributed shared memory accesses.
// map_shared_cluster(p, rank) -> dsmem_addr: the same as a .shared::cluster address (mapa
// .shared::cluster; byte offsets add to it), for ld/st_shared_cluster_*.
// A block's shared memory must outlive every remote access to it: end with cluster_sync().
// LSTM_FUSED_TC_HAS_CLUSTERS is 1 where these exist (the emulation, nvcc's host pass, device
// code for sm_90 and newer): a cluster kernel built for several architectures guards its body
// with it (and traps on older ones, where the host never launches it).
#if defined(LSTM_FUSED_CUDA_EMULATION) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
#define LSTM_FUSED_TC_HAS_CLUSTERS 1
#else
#define LSTM_FUSED_TC_HAS_CLUSTERS 0
#endif

#if defined(LSTM_FUSED_CUDA_EMULATION)

typedef unsigned char* dsmem_addr;

__device__ __forceinline__ unsigned cluster_ctarank() {
  return ::lstm_fused_emulation::tc_cluster_ctarank();
}
__device__ __forceinline__ unsigned cluster_nctarank() {
  return ::lstm_fused_emulation::tc_cluster_nctarank();
}
__device__ __forceinline__ void cluster_arrive() { ::lstm_fused_emulation::tc_cluster_arrive(); }
__device__ __forceinline__ void cluster_wait() { ::lstm_fused_emulation::tc_cluster_wait(); }

template <class T>
__device__ __forceinline__ T* map_shared_rank(T* p, unsigned rank) {
  return static_cast<T*>(::lstm_fused_emulation::tc_map_shared_rank(p, rank));
}

__device__ __forceinline__ dsmem_addr map_shared_cluster(const void* p, unsigned rank) {
  return static_cast<dsmem_addr>(::lstm_fused_emulation::tc_map_shared_rank(p, rank));
}
__device__ __forceinline__ float ld_shared_cluster_f32(dsmem_addr a) {
  float v;
  std::memcpy(&v, a, sizeof v);
  return v;
}
__device__ __forceinline__ void st_shared_cluster_f32(dsmem_addr a, float v) {
  std::memcpy(a, &v, sizeof v);
}
__device__ __forceinline__ unsigned ld_shared_cluster_u32(dsmem_addr a) {
  unsigned v;
  std::memcpy(&v, a, sizeof v);
  return v;
}
__device__ __forceinline__ void st_shared_cluster_u32(dsmem_addr a, unsigned v) {
  std::memcpy(a, &v, sizeof v);
}

#elif !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900  // nvcc: host pass, or sm_90 and newer

typedef uint32_t dsmem_addr;

__device__ __forceinline__ unsigned cluster_ctarank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ unsigned cluster_nctarank() {
  unsigned r;
  asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(r));
  return r;
}
__device__ __forceinline__ void cluster_arrive() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n" : : : "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" : : : "memory");
}

template <class T>
__device__ __forceinline__ T* map_shared_rank(T* p, unsigned rank) {
  uint64_t out;
  asm volatile("mapa.u64 %0, %1, %2;\n"
               : "=l"(out)
               : "l"(reinterpret_cast<uint64_t>(p)), "r"(rank));
  return reinterpret_cast<T*>(out);
}

__device__ __forceinline__ dsmem_addr map_shared_cluster(const void* p, unsigned rank) {
  uint32_t out;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n"
               : "=r"(out)
               : "r"(static_cast<uint32_t>(__cvta_generic_to_shared(p))), "r"(rank));
  return out;
}
__device__ __forceinline__ float ld_shared_cluster_f32(dsmem_addr a) {
  float v;
  asm volatile("ld.shared::cluster.f32 %0, [%1];\n" : "=f"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ void st_shared_cluster_f32(dsmem_addr a, float v) {
  asm volatile("st.shared::cluster.f32 [%0], %1;\n" : : "r"(a), "f"(v) : "memory");
}
__device__ __forceinline__ unsigned ld_shared_cluster_u32(dsmem_addr a) {
  unsigned v;
  asm volatile("ld.shared::cluster.u32 %0, [%1];\n" : "=r"(v) : "r"(a) : "memory");
  return v;
}
__device__ __forceinline__ void st_shared_cluster_u32(dsmem_addr a, unsigned v) {
  asm volatile("st.shared::cluster.u32 [%0], %1;\n" : : "r"(a), "r"(v) : "memory");
}

#endif

#if LSTM_FUSED_TC_HAS_CLUSTERS
__device__ __forceinline__ void cluster_sync() {
  cluster_arrive();
  cluster_wait();
}
#endif

}  // namespace tc
}  // namespace cuda
}  // namespace lstm_fused
