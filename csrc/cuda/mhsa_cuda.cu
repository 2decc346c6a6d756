// CUDA kernels of the multi-head self-attention core (schemas: csrc/mhsa_ops.cpp; the math and
// the flash-style scheme are those of csrc/cpu/mhsa_cpu.cpp).
//
// Forward: a block of kRows threads per (query tile, batch row b * head n); thread r owns query
// row i. Key and value tiles (kKeys rows) are staged in shared memory in the accumulation type;
// each thread scores the tile, updates its running max and sum (online softmax) once per tile
// and rescales its context accumulator, so the T x T scores never reach global memory. Only keys
// t < lengths[b] are loaded. Head size Dh <= MAX_D (template: 32, 64, 128).
// Backward: delta_i = dO_i . O_i (kernel 1); dK, dV with one thread per key row looping over
// query tiles staged in shared memory (kernel 2); dQ with one thread per query row looping over
// key tiles (kernel 3). No atomics: deterministic.
// Attention dropout (training): the weight p_ij that multiplies v_j is p_ij z_ij, z from the
// counter-based mask of csrc/attention_dropout.h (row bh * T + i, key j; the same function as
// the CPU and Triton kernels); l and lse stay those before dropout; the backward regenerates
// z: dV_j = sum_i p_ij z_ij dO_i, ds_ij = p_ij (z_ij dO_i . v_j - delta_i).
// Compile-checked for sm_80 / sm_90 and run on the CPU under the launch emulation of
// tests/cuda_emu/ (-DLSTM_FUSED_CUDA_EMULATION: registered as CPU kernels of the test library
// lstm_fused_emu; tests/test_cuda_emulated.py); it has never run on a GPU.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cmath>

#include "attention_schemas.h"
#include "cuda/lstm_cuda_runtime.h"
#include "mhsa_args.h"

namespace lstm_fused {
namespace {

constexpr int kRows = 64;   // threads per block = query (or key) rows per block
constexpr int kKeys = 32;   // rows per shared-memory tile

__device__ __forceinline__ int64_t row_length(const int64_t* lengths, int64_t b, int64_t T) {
  if (lengths == nullptr) return T;
  const int64_t len = lengths[b];
  return len < 0 ? 0 : (len > T ? T : len);
}

template <typename acc_t>
__device__ __forceinline__ acc_t neg_infinity() {
  return -INFINITY;
}

// Copies rows [row0, row0 + kKeys) of a (T, Dh) matrix into tile (kKeys, Dh), zeros past `limit`.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_tile(acc_t* tile, const scalar_t* src, int64_t row0,
                                           int64_t limit, int Dh) {
  for (int e = threadIdx.x; e < kKeys * Dh; e += blockDim.x) {
    const int r = e / Dh;
    const int d = e - r * Dh;
    const int64_t row = row0 + r;
    tile[e] = row < limit ? static_cast<acc_t>(src[row * Dh + d]) : acc_t(0);
  }
}

template <typename scalar_t, typename acc_t, int MAX_D>
__global__ void __launch_bounds__(kRows)
mhsa_forward_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                    const scalar_t* __restrict__ v, const int64_t* __restrict__ lengths,
                    scalar_t* __restrict__ out, acc_t* __restrict__ lse, int64_t N, int64_t T,
                    int Dh, acc_t scale, AttentionDropout drop) {
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  acc_t* k_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* v_tile = k_tile + kKeys * Dh;
  const int64_t bh = blockIdx.x;  // grid.x: B * N may exceed grid.y's 65535
  const int64_t len = row_length(lengths, bh / N, T);
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kRows + threadIdx.x;
  const bool active = i < T;
  const int64_t head = bh * T * Dh;

  acc_t qi[MAX_D], acc[MAX_D], s[kKeys];
#pragma unroll
  for (int d = 0; d < MAX_D; ++d) {
    qi[d] = (active && d < Dh) ? static_cast<acc_t>(q[head + i * Dh + d]) : acc_t(0);
    acc[d] = 0;
  }
  acc_t m = neg_infinity<acc_t>(), l = 0;
  const uint32_t row_key = drop.row_key(static_cast<uint64_t>(bh * T + i));
  const acc_t kept = static_cast<acc_t>(drop.keep_scale);
  for (int64_t j0 = 0; j0 < len; j0 += kKeys) {
    __syncthreads();  // the previous tile is no longer read
    stage_tile(k_tile, k + head, j0, len, Dh);
    stage_tile(v_tile, v + head, j0, len, Dh);
    __syncthreads();
    const int cols = static_cast<int>(len - j0 < kKeys ? len - j0 : kKeys);
    acc_t tile_max = neg_infinity<acc_t>();
    // Only the loops over d unroll (they index register arrays); the key loops stay loops.
#pragma unroll 1
    for (int c = 0; c < kKeys; ++c) {
      acc_t dot = 0;
#pragma unroll
      for (int d = 0; d < MAX_D; ++d) {
        if (d < Dh) dot += qi[d] * k_tile[c * Dh + d];
      }
      s[c] = c < cols ? dot * scale : neg_infinity<acc_t>();
      tile_max = s[c] > tile_max ? s[c] : tile_max;
    }
    const acc_t m_new = m > tile_max ? m : tile_max;
    const acc_t rescale = exp(m - m_new);  // 0 on the first tile (m = -inf)
    acc_t row_sum = 0;
#pragma unroll
    for (int d = 0; d < MAX_D; ++d) acc[d] *= rescale;
#pragma unroll 1
    for (int c = 0; c < kKeys; ++c) {
      const acc_t p = c < cols ? exp(s[c] - m_new) : acc_t(0);
      row_sum += p;
      const acc_t pz = drop.active() ? (drop.keep(row_key, j0 + c) ? p * kept : acc_t(0)) : p;
#pragma unroll
      for (int d = 0; d < MAX_D; ++d) {
        if (d < Dh) acc[d] += pz * v_tile[c * Dh + d];
      }
    }
    l = l * rescale + row_sum;
    m = m_new;
  }
  if (!active) return;
  const acc_t inv = len > 0 ? acc_t(1) / l : acc_t(0);  // length 0: zero context
#pragma unroll
  for (int d = 0; d < MAX_D; ++d) {
    if (d < Dh) out[head + i * Dh + d] = static_cast<scalar_t>(acc[d] * inv);
  }
  lse[bh * T + i] = len > 0 ? m + log(l) : neg_infinity<acc_t>();
}

template <typename scalar_t, typename acc_t>
__global__ void mhsa_delta_kernel(const scalar_t* __restrict__ dout,
                                  const scalar_t* __restrict__ out, acc_t* __restrict__ delta,
                                  int64_t rows, int Dh) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  acc_t s = 0;
  for (int d = 0; d < Dh; ++d) {
    s += static_cast<acc_t>(dout[r * Dh + d]) * static_cast<acc_t>(out[r * Dh + d]);
  }
  delta[r] = s;
}

// One thread per key row j: dV_j = sum_i p_ij dO_i, dK_j = scale sum_i ds_ij q_i.
template <typename scalar_t, typename acc_t, int MAX_D>
__global__ void __launch_bounds__(kRows)
mhsa_dkdv_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
                 const scalar_t* __restrict__ v, const scalar_t* __restrict__ dout,
                 const acc_t* __restrict__ lse, const acc_t* __restrict__ delta,
                 const int64_t* __restrict__ lengths, scalar_t* __restrict__ dk,
                 scalar_t* __restrict__ dv, int64_t N, int64_t T, int Dh, acc_t scale,
                 AttentionDropout drop) {
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  acc_t* q_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* do_tile = q_tile + kKeys * Dh;
  acc_t* lse_tile = do_tile + kKeys * Dh;
  acc_t* delta_tile = lse_tile + kKeys;
  const int64_t bh = blockIdx.x;  // grid.x: B * N may exceed grid.y's 65535
  const int64_t len = row_length(lengths, bh / N, T);
  const int64_t j = static_cast<int64_t>(blockIdx.y) * kRows + threadIdx.x;
  const bool valid = j < len;
  const int64_t head = bh * T * Dh;

  acc_t kj[MAX_D], vj[MAX_D], dkj[MAX_D], dvj[MAX_D];
#pragma unroll
  for (int d = 0; d < MAX_D; ++d) {
    kj[d] = (valid && d < Dh) ? static_cast<acc_t>(k[head + j * Dh + d]) : acc_t(0);
    vj[d] = (valid && d < Dh) ? static_cast<acc_t>(v[head + j * Dh + d]) : acc_t(0);
    dkj[d] = 0;
    dvj[d] = 0;
  }
  // A block whose keys are all padding only writes zeros.
  const bool block_has_keys = static_cast<int64_t>(blockIdx.y) * kRows < len;
  for (int64_t i0 = 0; block_has_keys && i0 < T; i0 += kKeys) {
    __syncthreads();
    stage_tile(q_tile, q + head, i0, T, Dh);
    stage_tile(do_tile, dout + head, i0, T, Dh);
    for (int r = threadIdx.x; r < kKeys; r += blockDim.x) {
      const int64_t row = i0 + r;
      lse_tile[r] = row < T ? lse[bh * T + row] : acc_t(0);
      delta_tile[r] = row < T ? delta[bh * T + row] : acc_t(0);
    }
    __syncthreads();
    const int rows = static_cast<int>(T - i0 < kKeys ? T - i0 : kKeys);
    for (int r = 0; r < rows && valid; ++r) {
      acc_t qk = 0, dp = 0;
#pragma unroll
      for (int d = 0; d < MAX_D; ++d) {
        if (d < Dh) {
          qk += q_tile[r * Dh + d] * kj[d];
          dp += do_tile[r * Dh + d] * vj[d];
        }
      }
      const acc_t p = exp(qk * scale - lse_tile[r]);
      acc_t z = 1;
      if (drop.active()) {
        const uint32_t row_key = drop.row_key(static_cast<uint64_t>(bh * T + i0 + r));
        z = drop.keep(row_key, j) ? static_cast<acc_t>(drop.keep_scale) : acc_t(0);
      }
      const acc_t ds = p * (dp * z - delta_tile[r]);
      const acc_t pz = p * z;
#pragma unroll
      for (int d = 0; d < MAX_D; ++d) {
        if (d < Dh) {
          dvj[d] += pz * do_tile[r * Dh + d];
          dkj[d] += ds * q_tile[r * Dh + d];
        }
      }
    }
  }
  if (j >= T) return;
#pragma unroll
  for (int d = 0; d < MAX_D; ++d) {
    if (d < Dh) {  // padded keys (j >= len) keep zeros
      dk[head + j * Dh + d] = static_cast<scalar_t>(dkj[d] * scale);
      dv[head + j * Dh + d] = static_cast<scalar_t>(dvj[d]);
    }
  }
}

// One thread per query row i: dQ_i = scale sum_j ds_ij k_j over the valid keys.
template <typename scalar_t, typename acc_t, int MAX_D>
__global__ void __launch_bounds__(kRows)
mhsa_dq_kernel(const scalar_t* __restrict__ q, const scalar_t* __restrict__ k,
               const scalar_t* __restrict__ v, const scalar_t* __restrict__ dout,
               const acc_t* __restrict__ lse, const acc_t* __restrict__ delta,
               const int64_t* __restrict__ lengths, scalar_t* __restrict__ dq, int64_t N,
               int64_t T, int Dh, acc_t scale, AttentionDropout drop) {
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  acc_t* k_tile = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* v_tile = k_tile + kKeys * Dh;
  const int64_t bh = blockIdx.x;  // grid.x: B * N may exceed grid.y's 65535
  const int64_t len = row_length(lengths, bh / N, T);
  const int64_t i = static_cast<int64_t>(blockIdx.y) * kRows + threadIdx.x;
  const bool active = i < T;
  const int64_t head = bh * T * Dh;

  acc_t qi[MAX_D], doi[MAX_D], dqi[MAX_D];
#pragma unroll
  for (int d = 0; d < MAX_D; ++d) {
    qi[d] = (active && d < Dh) ? static_cast<acc_t>(q[head + i * Dh + d]) : acc_t(0);
    doi[d] = (active && d < Dh) ? static_cast<acc_t>(dout[head + i * Dh + d]) : acc_t(0);
    dqi[d] = 0;
  }
  const acc_t lse_i = active ? lse[bh * T + i] : acc_t(0);
  const acc_t delta_i = active ? delta[bh * T + i] : acc_t(0);
  const uint32_t row_key = drop.row_key(static_cast<uint64_t>(bh * T + i));
  const acc_t kept = static_cast<acc_t>(drop.keep_scale);
  for (int64_t j0 = 0; j0 < len; j0 += kKeys) {
    __syncthreads();
    stage_tile(k_tile, k + head, j0, len, Dh);
    stage_tile(v_tile, v + head, j0, len, Dh);
    __syncthreads();
    const int cols = static_cast<int>(len - j0 < kKeys ? len - j0 : kKeys);
    for (int c = 0; c < cols && active; ++c) {
      acc_t qk = 0, dp = 0;
#pragma unroll
      for (int d = 0; d < MAX_D; ++d) {
        if (d < Dh) {
          qk += qi[d] * k_tile[c * Dh + d];
          dp += doi[d] * v_tile[c * Dh + d];
        }
      }
      const acc_t z =
          drop.active() ? (drop.keep(row_key, j0 + c) ? kept : acc_t(0)) : acc_t(1);
      const acc_t ds = exp(qk * scale - lse_i) * (dp * z - delta_i);
#pragma unroll
      for (int d = 0; d < MAX_D; ++d) {
        if (d < Dh) dqi[d] += ds * k_tile[c * Dh + d];
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int d = 0; d < MAX_D; ++d) {
    if (d < Dh) dq[head + i * Dh + d] = static_cast<scalar_t>(dqi[d] * scale);
  }
}

constexpr int64_t kMaxHeadDim = 128;

// Calls f.template operator()<MAX_D>() with the smallest MAX_D in {32, 64, 128} >= Dh.
template <typename F>
void dispatch_head_dim(int64_t Dh, F&& f) {
  TORCH_CHECK(Dh <= kMaxHeadDim, "mhsa (cuda): head size Dh = ", Dh, " exceeds ", kMaxHeadDim);
  if (Dh <= 32) {
    f(std::integral_constant<int, 32>());
  } else if (Dh <= 64) {
    f(std::integral_constant<int, 64>());
  } else {
    f(std::integral_constant<int, 128>());
  }
}

// Dynamic shared memory beyond 48 KiB (double tiles with Dh = 128) needs an opt-in per kernel.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes) {
#if !defined(LSTM_FUSED_CUDA_EMULATION)
  if (bytes > 48 * 1024) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(bytes)));
  }
#endif
}



const int64_t* lengths_ptr(const at::Tensor& lengths) {
  return lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
}

at::Tensor contiguous_lengths(const c10::optional<at::Tensor>& lengths) {
  return present(lengths) ? lengths->contiguous() : at::Tensor();
}

std::tuple<at::Tensor, at::Tensor> mhsa_forward_cuda(const at::Tensor& q_in,
                                                     const at::Tensor& k_in,
                                                     const at::Tensor& v_in,
                                                     const c10::optional<at::Tensor>& lengths,
                                                     double scale, double dropout_p,
                                                     const c10::optional<at::Tensor>& seed) {
  const MhsaSizes s = check_mhsa_args(q_in, k_in, v_in, lengths);
  const AttentionDropout drop = mhsa_dropout(dropout_p, seed);
  const DeviceScope scope(q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor len_t = contiguous_lengths(lengths);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({s.B, s.N, s.T}, q.options().dtype(mhsa_acc_type(q.scalar_type())));
  if (out.numel() == 0) return {out, lse};
  const dim3 grid(static_cast<unsigned>(s.B * s.N),
                  static_cast<unsigned>((s.T + kRows - 1) / kRows));
  const cudaStream_t stream = scope.stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = 2 * kKeys * s.Dh * sizeof(acc_t);
    dispatch_head_dim(s.Dh, [&](auto max_d) {
      constexpr int MAX_D = decltype(max_d)::value;
      allow_shared_memory(mhsa_forward_kernel<scalar_t, acc_t, MAX_D>, smem);
      LSTM_FUSED_LAUNCH_BLOCKS(grid, kRows, smem, stream,
                               mhsa_forward_kernel<scalar_t, acc_t, MAX_D>)(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          lengths_ptr(len_t), out.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), s.N, s.T,
          static_cast<int>(s.Dh), static_cast<acc_t>(scale), drop);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mhsa_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const c10::optional<at::Tensor>& lengths, double scale,
    double dropout_p, const c10::optional<at::Tensor>& seed, const at::Tensor& out_in,
    const at::Tensor& lse_in) {
  const MhsaSizes s = check_mhsa_args(q_in, k_in, v_in, lengths);
  const AttentionDropout drop = mhsa_dropout(dropout_p, seed);
  check_mhsa_backward_args(s, grad_out_in, q_in, out_in, lse_in);
  const DeviceScope scope(q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor dout = grad_out_in.to(q.scalar_type()).contiguous();
  const at::Tensor out = out_in.contiguous(), lse = lse_in.contiguous();
  const at::Tensor len_t = contiguous_lengths(lengths);
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  if (dq.numel() == 0) return {dq, dk, dv};
  at::Tensor delta = at::empty({s.B, s.N, s.T}, lse.options());
  const dim3 grid(static_cast<unsigned>(s.B * s.N),
                  static_cast<unsigned>((s.T + kRows - 1) / kRows));
  const cudaStream_t stream = scope.stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t rows = s.B * s.N * s.T;
    const unsigned delta_blocks = static_cast<unsigned>((rows + 255) / 256);
    LSTM_FUSED_LAUNCH(delta_blocks, 256, 0, stream, mhsa_delta_kernel<scalar_t, acc_t>)(
        dout.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), delta.data_ptr<acc_t>(), rows,
        static_cast<int>(s.Dh));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    dispatch_head_dim(s.Dh, [&](auto max_d) {
      constexpr int MAX_D = decltype(max_d)::value;
      const size_t smem_dkdv = (2 * kKeys * s.Dh + 2 * kKeys) * sizeof(acc_t);
      allow_shared_memory(mhsa_dkdv_kernel<scalar_t, acc_t, MAX_D>, smem_dkdv);
      LSTM_FUSED_LAUNCH_BLOCKS(grid, kRows, smem_dkdv, stream,
                               mhsa_dkdv_kernel<scalar_t, acc_t, MAX_D>)(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          dout.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), delta.data_ptr<acc_t>(),
          lengths_ptr(len_t), dk.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>(), s.N, s.T,
          static_cast<int>(s.Dh), static_cast<acc_t>(scale), drop);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const size_t smem_dq = 2 * kKeys * s.Dh * sizeof(acc_t);
      allow_shared_memory(mhsa_dq_kernel<scalar_t, acc_t, MAX_D>, smem_dq);
      LSTM_FUSED_LAUNCH_BLOCKS(grid, kRows, smem_dq, stream,
                               mhsa_dq_kernel<scalar_t, acc_t, MAX_D>)(
          q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
          dout.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), delta.data_ptr<acc_t>(),
          lengths_ptr(len_t), dq.data_ptr<scalar_t>(), s.N, s.T, static_cast<int>(s.Dh),
          static_cast<acc_t>(scale), drop);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {dq, dk, dv};
}

}  // namespace

#if defined(LSTM_FUSED_CUDA_EMULATION)
// The same schemas, in the namespace of the emulation test library.
TORCH_LIBRARY_FRAGMENT(lstm_fused_emu, m) { define_mhsa_ops(m); }
TORCH_LIBRARY_IMPL(lstm_fused_emu, CPU, m) {
#else
TORCH_LIBRARY_IMPL(lstm_fused, CUDA, m) {
#endif
  m.impl("mhsa_forward", &mhsa_forward_cuda);
  m.impl("mhsa_backward", &mhsa_backward_cuda);
}

}  // namespace lstm_fused
