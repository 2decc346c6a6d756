// CUDA kernels of the multi-head self-attention core and their launchers (declared in
// mhsa_launch.h; the math and the flash-style scheme are those of csrc/cpu/mhsa_cpu.cpp).
// Included by one mhsa_kernels_<dtype>_d<MAX_D>.cu per dtype and head-size bound, which
// instantiates the launchers; the host
// code is mhsa_cuda.cpp; the block shape and shared memory are csrc/cuda/mhsa_plan.h.
//
// Forward: a block per (tile of query rows, batch row b * head n); `lanes` threads own query
// row i, each 16 of its head dimensions. Key and value tiles (kMhsaKeys rows) are staged in
// shared memory in the accumulation type; the row's threads score the tile (partial dot
// products summed across the lanes), update the running max and sum (online softmax) once per
// tile and rescale their part of the context accumulator, so the T x T scores never reach
// global memory. Only keys t < lengths[b] are loaded. Head size Dh <= MAX_D (32, 64, 128).
// Backward: delta_i = dO_i . O_i (kernel 1); dK, dV with the lanes of one key row looping over
// query tiles staged in shared memory (kernel 2); dQ with the lanes of one query row looping
// over key tiles (kernel 3). No atomics: deterministic.
// Every thread of a block runs every loop trip (rows past T or past the length compute with
// zeros and write nothing): the warp shuffles need all 32 lanes.
// Attention dropout (training): the weight p_ij that multiplies v_j is p_ij z_ij, z from the
// counter-based mask of csrc/attention_dropout.h (row bh * T + i, key j; the same function as
// the CPU and Triton kernels); l and lse stay those before dropout; the backward regenerates
// z: dV_j = sum_i p_ij z_ij dO_i, ds_ij = p_ij (z_ij dO_i . v_j - delta_i).
// Compile-checked for sm_80 / sm_90 and run on the CPU under the launch emulation of
// tests/cuda_emu/ (tests/test_cuda_emulated.py); it has never run on a GPU.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>

#include "cuda/lstm_cuda_runtime.h"
#include "cuda/mhsa_launch.h"

namespace lstm_fused {
namespace cuda {
namespace {

// Threads per row, head dimensions per thread and rows per block of the MAX_D instantiation
// (the same numbers as plan_mhsa).
template <int MAX_D>
struct MhsaTile {
  static constexpr int kLanes = MAX_D / kMhsaDimsPerLane;
  static constexpr int kDims = kMhsaDimsPerLane;
  static constexpr int kRows = kMhsaThreads / kLanes;
  static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0,
                "a row's lanes are a power-of-two group inside one warp");
};
static_assert(kMhsaKeys <= 32, "mhsa_dkdv_kernel keeps a tile's dropout bits in one uint32_t");

// The valid keys of batch row b, clamped into [0, T]: the range is the caller's contract
// (checked on the host by lstm_fused.functional, not here: no device synchronisation), the
// clamp keeps every value memory-safe.
__device__ __forceinline__ int64_t mhsa_row_length(const int64_t* lengths, int64_t b, int64_t T) {
  if (lengths == nullptr) return T;
  const int64_t len = lengths[b];
  return len < 0 ? 0 : (len > T ? T : len);
}

template <typename acc_t>
__device__ __forceinline__ acc_t neg_infinity() {
  return -INFINITY;
}

// Sum over the LANES consecutive threads that own one row (xor offsets < LANES stay inside the
// aligned group); every thread of the group gets the sum.
template <int LANES, typename acc_t>
__device__ __forceinline__ acc_t row_sum(acc_t v) {
#pragma unroll
  for (int off = LANES / 2; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Copies rows [row0, row0 + kMhsaKeys) of a (T, Dh) matrix into tile (kMhsaKeys, Dh), zeros
// past `limit`.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_tile(acc_t* tile, const scalar_t* src, int64_t row0,
                                           int64_t limit, int Dh) {
  for (int e = threadIdx.x; e < kMhsaKeys * Dh; e += blockDim.x) {
    const int r = e / Dh;
    const int d = e - r * Dh;
    const int64_t row = row0 + r;
    tile[e] = row < limit ? static_cast<acc_t>(src[row * Dh + d]) : acc_t(0);
  }
}

// Loads this thread's dimensions of row `row` of a (T, Dh) matrix (zeros when !take).
template <int MAX_D, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_row_part(acc_t (&dst)[kMhsaDimsPerLane], const scalar_t* src,
                                              int64_t row, bool take, int lane, int Dh) {
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) {
    const int d = lane + e * MhsaTile<MAX_D>::kLanes;
    dst[e] = (take && d < Dh) ? static_cast<acc_t>(src[row * Dh + d]) : acc_t(0);
  }
}

// This thread's part of the dot product of its row vector with row r of a shared tile.
template <int MAX_D, typename acc_t>
__device__ __forceinline__ acc_t dot_part(const acc_t (&x)[kMhsaDimsPerLane], const acc_t* tile,
                                          int r, int lane, int Dh) {
  acc_t s = 0;
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) {
    const int d = lane + e * MhsaTile<MAX_D>::kLanes;
    if (d < Dh) s += x[e] * tile[r * Dh + d];
  }
  return s;
}

// acc += w * (row r of a shared tile), this thread's dimensions.
template <int MAX_D, typename acc_t>
__device__ __forceinline__ void axpy_part(acc_t (&acc)[kMhsaDimsPerLane], acc_t w,
                                          const acc_t* tile, int r, int lane, int Dh) {
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) {
    const int d = lane + e * MhsaTile<MAX_D>::kLanes;
    if (d < Dh) acc[e] += w * tile[r * Dh + d];
  }
}

// This thread's query row in a block of the forward or the dQ kernel: grid.x runs over the
// (b, n) heads (B * N may exceed grid.y's 65535), grid.y over blocks of Tile::kRows rows, and
// Tile::kLanes lanes share a row.
struct MhsaQueryRow {
  int64_t bh;    // head (b, n) = blockIdx.x
  int64_t len;   // valid keys of batch row b
  int64_t i;     // query row
  int64_t head;  // offset of the head's (T, Dh) matrices
  int lane;
  bool active;        // i < T
  uint32_t drop_key;  // the dropout row key of row i (attention_dropout.h)
};

template <int MAX_D, typename Params>
__device__ __forceinline__ MhsaQueryRow mhsa_query_row(const Params& a) {
  using Tile = MhsaTile<MAX_D>;
  MhsaQueryRow r;
  r.bh = blockIdx.x;
  r.len = mhsa_row_length(a.lengths, r.bh / a.N, a.T);
  r.lane = threadIdx.x % Tile::kLanes;
  r.i = static_cast<int64_t>(blockIdx.y) * Tile::kRows + threadIdx.x / Tile::kLanes;
  r.active = r.i < a.T;
  r.head = r.bh * a.T * a.Dh;
  r.drop_key = a.drop.row_key(static_cast<uint64_t>(r.bh * a.T + r.i));
  return r;
}

// Stages keys and values [j0, j0 + kMhsaKeys) of a head into shared memory, once every thread
// of the block is done with the previous tile; returns how many of them are valid keys.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ int stage_key_tile(acc_t* k_tile, acc_t* v_tile, const scalar_t* k,
                                              const scalar_t* v, int64_t j0, int64_t len, int Dh) {
  __syncthreads();  // the previous tile is no longer read
  stage_tile(k_tile, k, j0, len, Dh);
  stage_tile(v_tile, v, j0, len, Dh);
  __syncthreads();
  return static_cast<int>(len - j0 < kMhsaKeys ? len - j0 : kMhsaKeys);
}

template <int MAX_D, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_row_part(scalar_t* dst, const acc_t (&x)[kMhsaDimsPerLane],
                                               acc_t factor, int64_t row, int lane, int Dh) {
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) {
    const int d = lane + e * MhsaTile<MAX_D>::kLanes;
    if (d < Dh) dst[row * Dh + d] = static_cast<scalar_t>(x[e] * factor);
  }
}

template <typename scalar_t, int MAX_D>
__global__ void __launch_bounds__(kMhsaThreads) mhsa_forward_kernel(MhsaForwardParams<scalar_t> a) {
  using acc_t = cell_acc_t<scalar_t>;
  using Tile = MhsaTile<MAX_D>;
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  const MhsaQueryRow row = mhsa_query_row<MAX_D>(a);
  acc_t* k_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* v_tile = k_tile + kMhsaKeys * a.Dh;

  acc_t qi[kMhsaDimsPerLane], acc[kMhsaDimsPerLane], s[kMhsaKeys];
  load_row_part<MAX_D>(qi, a.q + row.head, row.i, row.active, row.lane, a.Dh);
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) acc[e] = 0;
  acc_t m = neg_infinity<acc_t>(), l = 0;
  const acc_t kept = static_cast<acc_t>(a.drop.keep_scale);
  for (int64_t j0 = 0; j0 < row.len; j0 += kMhsaKeys) {
    const int cols =
        stage_key_tile(k_tile, v_tile, a.k + row.head, a.v + row.head, j0, row.len, a.Dh);
    acc_t tile_max = neg_infinity<acc_t>();
    // The key loops unroll fully: s[] stays in registers.
#pragma unroll
    for (int c = 0; c < kMhsaKeys; ++c) {
      const acc_t dot = row_sum<Tile::kLanes>(dot_part<MAX_D>(qi, k_tile, c, row.lane, a.Dh));
      s[c] = c < cols ? dot * a.scale : neg_infinity<acc_t>();
      tile_max = s[c] > tile_max ? s[c] : tile_max;
    }
    const acc_t m_new = m > tile_max ? m : tile_max;
    const acc_t rescale = exp(m - m_new);  // 0 on the first tile (m = -inf)
    acc_t tile_sum = 0;
#pragma unroll
    for (int e = 0; e < kMhsaDimsPerLane; ++e) acc[e] *= rescale;
#pragma unroll
    for (int c = 0; c < kMhsaKeys; ++c) {
      const acc_t p = c < cols ? exp(s[c] - m_new) : acc_t(0);
      tile_sum += p;
      const acc_t pz =
          a.drop.active() ? (a.drop.keep(row.drop_key, j0 + c) ? p * kept : acc_t(0)) : p;
      axpy_part<MAX_D>(acc, pz, v_tile, c, row.lane, a.Dh);
    }
    l = l * rescale + tile_sum;
    m = m_new;
  }
  if (!row.active) return;
  const acc_t inv = row.len > 0 ? acc_t(1) / l : acc_t(0);  // length 0: zero context
  store_row_part<MAX_D>(a.out + row.head, acc, inv, row.i, row.lane, a.Dh);
  if (row.lane == 0) a.lse[row.bh * a.T + row.i] = row.len > 0 ? m + log(l) : neg_infinity<acc_t>();
}

template <typename scalar_t>
__global__ void mhsa_delta_kernel(MhsaBackwardParams<scalar_t> a, int64_t rows) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  acc_t s = 0;
  for (int d = 0; d < a.Dh; ++d) {
    s += static_cast<acc_t>(a.dout[r * a.Dh + d]) * static_cast<acc_t>(a.out[r * a.Dh + d]);
  }
  a.delta[r] = s;
}

// The lanes of key row j: dV_j = sum_i p_ij z_ij dO_i, dK_j = scale sum_i ds_ij q_i.
template <typename scalar_t, int MAX_D>
__global__ void __launch_bounds__(kMhsaThreads) mhsa_dkdv_kernel(MhsaBackwardParams<scalar_t> a) {
  using acc_t = cell_acc_t<scalar_t>;
  using Tile = MhsaTile<MAX_D>;
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  const int Dh = a.Dh;
  const int64_t T = a.T;
  acc_t* q_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* do_tile = q_tile + kMhsaKeys * Dh;
  acc_t* lse_tile = do_tile + kMhsaKeys * Dh;
  acc_t* delta_tile = lse_tile + kMhsaKeys;
  // The dropout hash of each staged query row, once per tile for all the block's key rows.
  uint32_t* row_key_tile = reinterpret_cast<uint32_t*>(delta_tile + kMhsaKeys);
  const int64_t bh = blockIdx.x;  // grid.x: B * N may exceed grid.y's 65535
  const int64_t len = mhsa_row_length(a.lengths, bh / a.N, T);
  const int lane = threadIdx.x % Tile::kLanes;
  const int64_t j = static_cast<int64_t>(blockIdx.y) * Tile::kRows + threadIdx.x / Tile::kLanes;
  const bool valid = j < len;
  const int64_t head = bh * T * Dh;

  acc_t kj[kMhsaDimsPerLane], vj[kMhsaDimsPerLane], dkj[kMhsaDimsPerLane], dvj[kMhsaDimsPerLane];
  load_row_part<MAX_D>(kj, a.k + head, j, valid, lane, Dh);
  load_row_part<MAX_D>(vj, a.v + head, j, valid, lane, Dh);
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) {
    dkj[e] = 0;
    dvj[e] = 0;
  }
  // A block whose keys are all padding only writes zeros.
  const bool block_has_keys = static_cast<int64_t>(blockIdx.y) * Tile::kRows < len;
  for (int64_t i0 = 0; block_has_keys && i0 < T; i0 += kMhsaKeys) {
    __syncthreads();
    stage_tile(q_tile, a.q + head, i0, T, Dh);
    stage_tile(do_tile, a.dout + head, i0, T, Dh);
    for (int r = threadIdx.x; r < kMhsaKeys; r += blockDim.x) {
      const int64_t row = i0 + r;
      lse_tile[r] = row < T ? a.lse[bh * T + row] : acc_t(0);
      delta_tile[r] = row < T ? a.delta[bh * T + row] : acc_t(0);
      row_key_tile[r] = a.drop.row_key(static_cast<uint64_t>(bh * T + row));
    }
    __syncthreads();
    const int rows = static_cast<int>(T - i0 < kMhsaKeys ? T - i0 : kMhsaKeys);
    // Bit r: the dropout keeps weight (i0 + r, j). Without dropout (threshold 0) every bit is
    // set. Hashed before the row loop: inside it the hash made ptxas spill.
    uint32_t keep_bits = 0;
    for (int r = 0; r < rows; ++r)
      keep_bits |= static_cast<uint32_t>(a.drop.keep(row_key_tile[r], j)) << r;
    for (int r = 0; r < rows; ++r) {
      const acc_t qk = row_sum<Tile::kLanes>(dot_part<MAX_D>(kj, q_tile, r, lane, Dh));
      const acc_t dp = row_sum<Tile::kLanes>(dot_part<MAX_D>(vj, do_tile, r, lane, Dh));
      const acc_t p = valid ? exp(qk * a.scale - lse_tile[r]) : acc_t(0);  // padded key: 0
      const acc_t z = (keep_bits >> r) & 1u ? a.keep_scale : acc_t(0);     // 1 without dropout
      const acc_t ds = p * (dp * z - delta_tile[r]);
      axpy_part<MAX_D>(dvj, p * z, do_tile, r, lane, Dh);
      axpy_part<MAX_D>(dkj, ds, q_tile, r, lane, Dh);
    }
  }
  if (j >= T) return;
  // padded keys (j >= len) write zeros
  store_row_part<MAX_D>(a.dk + head, dkj, a.scale, j, lane, Dh);
  store_row_part<MAX_D>(a.dv + head, dvj, acc_t(1), j, lane, Dh);
}

// The lanes of query row i: dQ_i = scale sum_j ds_ij k_j over the valid keys.
template <typename scalar_t, int MAX_D>
__global__ void __launch_bounds__(kMhsaThreads) mhsa_dq_kernel(MhsaBackwardParams<scalar_t> a) {
  using acc_t = cell_acc_t<scalar_t>;
  using Tile = MhsaTile<MAX_D>;
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  const MhsaQueryRow row = mhsa_query_row<MAX_D>(a);
  acc_t* k_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* v_tile = k_tile + kMhsaKeys * a.Dh;

  acc_t qi[kMhsaDimsPerLane], doi[kMhsaDimsPerLane], dqi[kMhsaDimsPerLane];
  load_row_part<MAX_D>(qi, a.q + row.head, row.i, row.active, row.lane, a.Dh);
  load_row_part<MAX_D>(doi, a.dout + row.head, row.i, row.active, row.lane, a.Dh);
#pragma unroll
  for (int e = 0; e < kMhsaDimsPerLane; ++e) dqi[e] = 0;
  const acc_t lse_i = row.active ? a.lse[row.bh * a.T + row.i] : acc_t(0);
  const acc_t delta_i = row.active ? a.delta[row.bh * a.T + row.i] : acc_t(0);
  const acc_t kept = static_cast<acc_t>(a.drop.keep_scale);
  for (int64_t j0 = 0; j0 < row.len; j0 += kMhsaKeys) {
    const int cols =
        stage_key_tile(k_tile, v_tile, a.k + row.head, a.v + row.head, j0, row.len, a.Dh);
    for (int c = 0; c < cols; ++c) {
      const acc_t qk = row_sum<Tile::kLanes>(dot_part<MAX_D>(qi, k_tile, c, row.lane, a.Dh));
      const acc_t dp = row_sum<Tile::kLanes>(dot_part<MAX_D>(doi, v_tile, c, row.lane, a.Dh));
      if (!row.active) continue;  // a row past T: nothing to accumulate (after the shuffles)
      const acc_t z =
          a.drop.active() ? (a.drop.keep(row.drop_key, j0 + c) ? kept : acc_t(0)) : acc_t(1);
      const acc_t ds = exp(qk * a.scale - lse_i) * (dp * z - delta_i);
      axpy_part<MAX_D>(dqi, ds, k_tile, c, row.lane, a.Dh);
    }
  }
  if (!row.active) return;
  store_row_part<MAX_D>(a.dq + row.head, dqi, a.scale, row.i, row.lane, a.Dh);
}

// Dynamic shared memory beyond 48 KiB needs an opt-in per kernel (the host has checked that
// the plan fits the device's opt-in limit).
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
#if !defined(LSTM_FUSED_CUDA_EMULATION)
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
#else
  (void)kernel;
  (void)bytes;
#endif
}

template <int MAX_D>
dim3 mhsa_grid(int64_t B, int64_t N, int64_t T) {
  constexpr int rows = MhsaTile<MAX_D>::kRows;
  return dim3(static_cast<unsigned>(B * N), static_cast<unsigned>((T + rows - 1) / rows));
}

}  // namespace

template <typename scalar_t, int MAX_D>
void launch_mhsa_forward(const MhsaForwardParams<scalar_t>& a, const MhsaPlan& plan,
                         cudaStream_t stream) {
  allow_shared_memory(mhsa_forward_kernel<scalar_t, MAX_D>, plan.smem_forward);
  LSTM_FUSED_LAUNCH_BLOCKS(mhsa_grid<MAX_D>(a.B, a.N, a.T), kMhsaThreads, plan.smem_forward, stream,
                           mhsa_forward_kernel<scalar_t, MAX_D>)(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, int MAX_D>
void launch_mhsa_backward(const MhsaBackwardParams<scalar_t>& a, const MhsaPlan& plan,
                          cudaStream_t stream) {
  const int64_t rows = a.B * a.N * a.T;
  const unsigned delta_blocks = static_cast<unsigned>((rows + 255) / 256);
  LSTM_FUSED_LAUNCH(delta_blocks, 256, 0, stream, mhsa_delta_kernel<scalar_t>)(a, rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const dim3 grid = mhsa_grid<MAX_D>(a.B, a.N, a.T);
  allow_shared_memory(mhsa_dkdv_kernel<scalar_t, MAX_D>, plan.smem_dkdv);
  LSTM_FUSED_LAUNCH_BLOCKS(grid, kMhsaThreads, plan.smem_dkdv, stream,
                           mhsa_dkdv_kernel<scalar_t, MAX_D>)(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  allow_shared_memory(mhsa_dq_kernel<scalar_t, MAX_D>, plan.smem_dq);
  LSTM_FUSED_LAUNCH_BLOCKS(grid, kMhsaThreads, plan.smem_dq, stream,
                           mhsa_dq_kernel<scalar_t, MAX_D>)(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Explicit instantiations of the launchers for one storage type and head-size bound (one .cu
// file each: mhsa_kernels_<dtype>_d<MAX_D>.cu).
#define LSTM_FUSED_INSTANTIATE_MHSA(T_, MAX_D_)                                                  \
  template void launch_mhsa_forward<T_, MAX_D_>(const MhsaForwardParams<T_>&, const MhsaPlan&,   \
                                                cudaStream_t);                                   \
  template void launch_mhsa_backward<T_, MAX_D_>(const MhsaBackwardParams<T_>&, const MhsaPlan&, \
                                                 cudaStream_t);

}  // namespace cuda
}  // namespace lstm_fused
