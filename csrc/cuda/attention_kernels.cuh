// CUDA kernels of the attention operators (schemas and layouts: csrc/attention_schemas.h) and
// their launchers (declared in attention_launch.h). Included by one attention_kernels_<dtype>.cu
// per dtype, which instantiates the launchers; the host code is attention_cuda.cpp.
//
// The same algorithms as the CPU kernels (csrc/cpu/attention_cpu.cpp): an online max / sum over
// each row, padding (t >= lengths[b], mask false) never loaded, excluded positions exactly 0,
// empty rows zero. Arithmetic in opmath (float for half / bfloat16, double for double).
//   masked softmax      one block per row: each thread keeps a running (max, sum) over its
//                       strided columns, the pairs are merged in a block reduction, then a
//                       write-only sweep. Backward: block-reduced dot, then one sweep.
//   attention pooling   grid (B, D / kThreads): per tile of kWarps steps, warp w computes
//                       e_t = v . tanh(proj_t + qproj) for t = t0 + w (lanes over A), then each
//                       thread (one feature d) updates its online context. Backward, one block
//                       per b: warps over steps (dot with g_c, grad_x, de_t into a scratch row),
//                       then threads over A (grad_proj, per-b partial grad_v and grad_qproj).
//   channel attention   threads over channels, loops over valid steps.
// lengths are clamped to [0, T] on the device (the Python entry points check them beforehand).
// Compile-checked for sm_80 / sm_90 and run on the CPU under the launch emulation of
// tests/cuda_emu/ (tests/test_cuda_emulated.py); it has never run on a GPU.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <limits>

#include "cuda/attention_launch.h"
#include "cuda/lstm_cuda_runtime.h"
#include "lstm_cell_math.h"

namespace lstm_fused {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -std::numeric_limits<T>::infinity();
}

__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }
__device__ __forceinline__ float dtanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dtanh(double x) { return tanh(x); }

// The valid length of row i, clamped into [0, limit]: the range is the caller's contract
// (checked on the host by lstm_fused.functional, not here: no device synchronisation), the
// clamp keeps every value memory-safe.
__device__ __forceinline__ int64_t row_length(const int64_t* lengths, int64_t i, int64_t limit) {
  if (lengths == nullptr) return limit;
  const int64_t n = lengths[i];
  return n < 0 ? 0 : (n > limit ? limit : n);
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Merge two online-softmax states (m, s): s = sum exp(x - m). -inf maxima (nothing seen) merge
// without forming -inf - -inf.
template <typename T>
__device__ __forceinline__ void merge_ms(T& m, T& s, T m2, T s2) {
  const T mx = m > m2 ? m : m2;
  if (mx == neg_inf<T>()) return;  // both empty
  s = (m == neg_inf<T>() ? T(0) : s * dexp(m - mx)) +
      (m2 == neg_inf<T>() ? T(0) : s2 * dexp(m2 - mx));
  m = mx;
}

// Block-wide merge of (m, s); every thread gets the result.
template <typename T>
__device__ void block_merge_ms(T& m, T& s) {
  LSTM_FUSED_STATIC_SHARED(T, sm, kWarps);
  LSTM_FUSED_STATIC_SHARED(T, ss, kWarps);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const T m2 = __shfl_xor_sync(0xffffffffu, m, off);
    const T s2 = __shfl_xor_sync(0xffffffffu, s, off);
    merge_ms(m, s, m2, s2);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  m = neg_inf<T>();
  s = T(0);
  for (int w = 0; w < kWarps; ++w) merge_ms(m, s, sm[w], ss[w]);
  __syncthreads();
}

template <typename T>
__device__ T block_sum(T v) {
  LSTM_FUSED_STATIC_SHARED(T, part, kWarps);
  v = warp_sum(v);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  T total = 0;
  for (int w = 0; w < kWarps; ++w) total += part[w];
  __syncthreads();
  return total;
}

// ---------------------------------------------------------------------------- masked softmax

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    masked_softmax_fwd_kernel(const scalar_t* __restrict__ scores,
                              const int64_t* __restrict__ lengths, const bool* __restrict__ mask,
                              scalar_t* __restrict__ out, int64_t N, double scale_d) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t r = blockIdx.x;
  const acc_t scale = static_cast<acc_t>(scale_d);
  const scalar_t* row = scores + r * N;
  const bool* krow = mask ? mask + r * N : nullptr;
  const int64_t n = row_length(lengths, r, N);
  acc_t m = neg_inf<acc_t>(), s = 0;
  for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    if (krow && !krow[j]) continue;
    const acc_t e = scale * static_cast<acc_t>(row[j]);
    if (e > m) {
      s = (m == neg_inf<acc_t>() ? acc_t(0) : s * dexp(m - e)) + acc_t(1);
      m = e;
    } else {
      s += dexp(e - m);
    }
  }
  block_merge_ms(m, s);
  const acc_t inv = s > 0 ? acc_t(1) / s : acc_t(0);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const bool take = j < n && (!krow || krow[j]);
    out[r * N + j] = take
                         ? static_cast<scalar_t>(dexp(scale * static_cast<acc_t>(row[j]) - m) * inv)
                         : scalar_t(0);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    masked_softmax_bwd_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ probs,
                              scalar_t* __restrict__ out, int64_t N, double scale_d) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t r = blockIdx.x;
  const acc_t scale = static_cast<acc_t>(scale_d);
  acc_t dot = 0;
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const acc_t p = static_cast<acc_t>(probs[r * N + j]);
    if (p != 0) dot += p * static_cast<acc_t>(grad[r * N + j]);
  }
  dot = block_sum(dot);
  for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
    const acc_t p = static_cast<acc_t>(probs[r * N + j]);
    out[r * N + j] =
        p != 0 ? static_cast<scalar_t>(scale * p * (static_cast<acc_t>(grad[r * N + j]) - dot))
               : scalar_t(0);
  }
}

// ------------------------------------------------------------------------- attention pooling

// e_t for the step t of warp-lane `lane` (lanes over A); the full sum in every lane.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t score(const PoolingArgs<scalar_t>& a, int64_t b, int64_t t,
                                       int lane) {
  const scalar_t* pr = a.proj + b * a.pb + t * a.pt;
  acc_t e = 0;
  for (int64_t k = lane; k < a.A; k += 32) {
    acc_t u = static_cast<acc_t>(pr[k]);
    if (a.q) u += static_cast<acc_t>(a.q[b * a.A + k]);
    e += static_cast<acc_t>(a.v[k]) * dtanh(u);
  }
  return warp_sum(e);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    attention_pooling_fwd_kernel(PoolingArgs<scalar_t> a, scalar_t* __restrict__ context,
                                 scalar_t* __restrict__ alpha, scalar_t* __restrict__ lse,
                                 cell_acc_t<scalar_t>* __restrict__ e_rows) {
  using acc_t = cell_acc_t<scalar_t>;
  LSTM_FUSED_STATIC_SHARED(acc_t, tile_e, kWarps);
  const int64_t b = blockIdx.x;
  const int64_t d = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  const bool writer = blockIdx.y == 0;  // the first D slice also writes alpha and lse
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n = row_length(a.lengths, b, a.T);
  acc_t* e_row = e_rows + b * a.T;
  acc_t m = neg_inf<acc_t>(), s = 0, ctx = 0;
  for (int64_t t0 = 0; t0 < n; t0 += kWarps) {
    const int64_t t = t0 + warp;
    acc_t e = neg_inf<acc_t>();
    if (t < n) e = score<scalar_t, acc_t>(a, b, t, lane);
    if (lane == 0) {
      tile_e[warp] = e;
      if (writer && t < n) e_row[t] = e;
    }
    __syncthreads();
    acc_t tile_max = neg_inf<acc_t>();
    for (int k = 0; k < kWarps; ++k) tile_max = tile_e[k] > tile_max ? tile_e[k] : tile_max;
    const acc_t m_new = tile_max > m ? tile_max : m;  // finite: the tile has a valid step
    const acc_t rescale = m == neg_inf<acc_t>() ? acc_t(0) : dexp(m - m_new);
    s *= rescale;
    ctx *= rescale;
    for (int k = 0; k < kWarps && t0 + k < n; ++k) {
      const acc_t w = dexp(tile_e[k] - m_new);
      s += w;
      if (d < a.D) ctx += w * static_cast<acc_t>(a.x[b * a.xb + (t0 + k) * a.xt + d]);
    }
    m = m_new;
    __syncthreads();
  }
  const acc_t inv = s > 0 ? acc_t(1) / s : acc_t(0);
  if (d < a.D) context[b * a.D + d] = static_cast<scalar_t>(ctx * inv);
  if (writer) {
    if (threadIdx.x == 0) {
      lse[b] = static_cast<scalar_t>(s > 0 ? m + dlog(s) : neg_inf<acc_t>());
    }
    for (int64_t t = threadIdx.x; t < a.T; t += blockDim.x) {
      alpha[b * a.T + t] = t < n ? static_cast<scalar_t>(dexp(e_row[t] - m) * inv) : scalar_t(0);
    }
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    attention_pooling_bwd_kernel(PoolingArgs<scalar_t> a, PoolingGrads<scalar_t> g) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t n = row_length(a.lengths, b, a.T);
  const int64_t T = a.T, D = a.D, A = a.A;
  // dot = sum_t alpha_t g_alpha_t + g_c . c (an empty row has no valid term)
  acc_t part = 0;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x) {
    part += static_cast<acc_t>(g.alpha[b * T + t]) * static_cast<acc_t>(g.ga[b * T + t]);
  }
  if (n > 0) {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      part += static_cast<acc_t>(g.gc[b * D + d]) * static_cast<acc_t>(g.context[b * D + d]);
    }
  }
  const acc_t dot = block_sum(part);
  const acc_t glse = n > 0 ? static_cast<acc_t>(g.glse[b]) : acc_t(0);
  acc_t* de_row = g.de_rows + b * T;
  // Warps over steps: de_t and grad_x_t (zeros on padding).
  for (int64_t t = warp; t < T; t += kWarps) {
    scalar_t* gxr = g.gx + (b * T + t) * D;
    if (t >= n) {
      for (int64_t d = lane; d < D; d += 32) gxr[d] = scalar_t(0);
      continue;
    }
    const acc_t al = static_cast<acc_t>(g.alpha[b * T + t]);
    const scalar_t* xr = a.x + b * a.xb + t * a.xt;
    acc_t gxdot = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const acc_t gcd = static_cast<acc_t>(g.gc[b * D + d]);
      gxdot += gcd * static_cast<acc_t>(xr[d]);
      gxr[d] = static_cast<scalar_t>(al * gcd);
    }
    gxdot = warp_sum(gxdot);
    if (lane == 0) de_row[t] = al * (static_cast<acc_t>(g.ga[b * T + t]) + gxdot - dot + glse);
  }
  __syncthreads();  // de_row (global, written by this block) is visible to the block after this
  // Threads over A: grad_proj, grad_v and grad_qproj partial sums of row b.
  for (int64_t k = threadIdx.x; k < A; k += blockDim.x) {
    acc_t u_q = a.q ? static_cast<acc_t>(a.q[b * A + k]) : acc_t(0);
    const acc_t vk = static_cast<acc_t>(a.v[k]);
    acc_t gv = 0, gq = 0;
    for (int64_t t = 0; t < n; ++t) {
      const acc_t th = dtanh(static_cast<acc_t>(a.proj[b * a.pb + t * a.pt + k]) + u_q);
      const acc_t de = de_row[t];
      const acc_t gp = de * vk * (acc_t(1) - th * th);
      g.gproj[(b * T + t) * A + k] = static_cast<scalar_t>(gp);
      gv += de * th;
      gq += gp;
    }
    for (int64_t t = n; t < T; ++t) g.gproj[(b * T + t) * A + k] = scalar_t(0);
    g.gv_rows[b * A + k] = gv;
    g.gq_rows[b * A + k] = gq;
  }
}

// ------------------------------------------------------------------------- channel attention

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    masked_mean_fwd_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ lengths,
                           scalar_t* __restrict__ mean, int64_t T, int64_t C, int64_t xb,
                           int64_t xt) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t n = row_length(lengths, b, T);
  acc_t acc = 0;
  for (int64_t t = 0; t < n; ++t) acc += static_cast<acc_t>(x[b * xb + t * xt + c]);
  mean[b * C + c] = static_cast<scalar_t>(n > 0 ? acc / static_cast<acc_t>(n) : acc_t(0));
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    masked_mean_bwd_kernel(const scalar_t* __restrict__ gm, const int64_t* __restrict__ lengths,
                           scalar_t* __restrict__ gx, int64_t B, int64_t T, int64_t C) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= B * T * C) return;
  const int64_t c = i % C, t = (i / C) % T, b = i / (C * T);
  const int64_t n = row_length(lengths, b, T);
  gx[i] = t < n ? static_cast<scalar_t>(static_cast<acc_t>(gm[b * C + c]) / static_cast<acc_t>(n))
                : scalar_t(0);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    rescale_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                       const int64_t* __restrict__ lengths, scalar_t* __restrict__ y, int64_t B,
                       int64_t T, int64_t C, int64_t xb, int64_t xt) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= B * T * C) return;
  const int64_t c = i % C, t = (i / C) % T, b = i / (C * T);
  const int64_t n = row_length(lengths, b, T);
  y[i] = t < n ? static_cast<scalar_t>(static_cast<acc_t>(x[b * xb + t * xt + c]) *
                                       static_cast<acc_t>(w[b * C + c]))
               : scalar_t(0);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    rescale_bwd_kernel(const scalar_t* __restrict__ gy, const scalar_t* __restrict__ x,
                       const scalar_t* __restrict__ w, const int64_t* __restrict__ lengths,
                       scalar_t* __restrict__ gx, scalar_t* __restrict__ gw, int64_t T, int64_t C,
                       int64_t xb, int64_t xt) {
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t b = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x;
  if (c >= C) return;
  const int64_t n = row_length(lengths, b, T);
  const acc_t wc = static_cast<acc_t>(w[b * C + c]);
  acc_t acc = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int64_t i = (b * T + t) * C + c;
    if (t < n) {
      const acc_t g = static_cast<acc_t>(gy[i]);
      gx[i] = static_cast<scalar_t>(g * wc);
      acc += g * static_cast<acc_t>(x[b * xb + t * xt + c]);
    } else {
      gx[i] = scalar_t(0);
    }
  }
  gw[b * C + c] = static_cast<scalar_t>(acc);
}

unsigned int attention_blocks_for(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

}  // namespace

template <typename scalar_t>
void launch_masked_softmax_forward(const scalar_t* scores, const int64_t* lengths, const bool* mask,
                                   scalar_t* out, int64_t R, int64_t N, double scale,
                                   cudaStream_t stream) {
  LSTM_FUSED_LAUNCH_BLOCKS(static_cast<unsigned int>(R), kThreads, 0, stream,
                           masked_softmax_fwd_kernel<scalar_t>)(scores, lengths, mask, out, N,
                                                                scale);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_masked_softmax_backward(const scalar_t* grad, const scalar_t* probs, scalar_t* out,
                                    int64_t R, int64_t N, double scale, cudaStream_t stream) {
  LSTM_FUSED_LAUNCH_BLOCKS(static_cast<unsigned int>(R), kThreads, 0, stream,
                           masked_softmax_bwd_kernel<scalar_t>)(grad, probs, out, N, scale);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_attention_pooling_forward(const PoolingArgs<scalar_t>& a, scalar_t* context,
                                      scalar_t* alpha, scalar_t* lse, cell_acc_t<scalar_t>* e_rows,
                                      cudaStream_t stream) {
  const unsigned int d_blocks = attention_blocks_for(a.D);
  const dim3 grid(static_cast<unsigned int>(a.B), d_blocks > 0 ? d_blocks : 1u);
  LSTM_FUSED_LAUNCH_BLOCKS(grid, kThreads, 0, stream, attention_pooling_fwd_kernel<scalar_t>)(
      a, context, alpha, lse, e_rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_attention_pooling_backward(const PoolingArgs<scalar_t>& a,
                                       const PoolingGrads<scalar_t>& g, cudaStream_t stream) {
  LSTM_FUSED_LAUNCH_BLOCKS(static_cast<unsigned int>(a.B), kThreads, 0, stream,
                           attention_pooling_bwd_kernel<scalar_t>)(a, g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_masked_mean_forward(const scalar_t* x, const int64_t* lengths, scalar_t* mean,
                                int64_t B, int64_t T, int64_t C, int64_t xb, int64_t xt,
                                cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(B), attention_blocks_for(C));
  LSTM_FUSED_LAUNCH_BLOCKS(grid, kThreads, 0, stream, masked_mean_fwd_kernel<scalar_t>)(
      x, lengths, mean, T, C, xb, xt);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_masked_mean_backward(const scalar_t* grad_mean, const int64_t* lengths,
                                 scalar_t* grad_x, int64_t B, int64_t T, int64_t C,
                                 cudaStream_t stream) {
  LSTM_FUSED_LAUNCH_BLOCKS(attention_blocks_for(B * T * C), kThreads, 0, stream,
                           masked_mean_bwd_kernel<scalar_t>)(grad_mean, lengths, grad_x, B, T, C);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_rescale_forward(const scalar_t* x, const scalar_t* w, const int64_t* lengths,
                            scalar_t* y, int64_t B, int64_t T, int64_t C, int64_t xb, int64_t xt,
                            cudaStream_t stream) {
  LSTM_FUSED_LAUNCH_BLOCKS(attention_blocks_for(B * T * C), kThreads, 0, stream,
                           rescale_fwd_kernel<scalar_t>)(x, w, lengths, y, B, T, C, xb, xt);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_rescale_backward(const scalar_t* grad_y, const scalar_t* x, const scalar_t* w,
                             const int64_t* lengths, scalar_t* grad_x, scalar_t* grad_w, int64_t B,
                             int64_t T, int64_t C, int64_t xb, int64_t xt, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned int>(B), attention_blocks_for(C));
  LSTM_FUSED_LAUNCH_BLOCKS(grid, kThreads, 0, stream, rescale_bwd_kernel<scalar_t>)(
      grad_y, x, w, lengths, grad_x, grad_w, T, C, xb, xt);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Explicit instantiations of every launcher for one storage type (one .cu file per type).
#define LSTM_FUSED_INSTANTIATE_ATTENTION(T_)                                                      \
  template void launch_masked_softmax_forward<T_>(const T_*, const int64_t*, const bool*, T_*,    \
                                                  int64_t, int64_t, double, cudaStream_t);        \
  template void launch_masked_softmax_backward<T_>(const T_*, const T_*, T_*, int64_t, int64_t,   \
                                                   double, cudaStream_t);                         \
  template void launch_attention_pooling_forward<T_>(const PoolingArgs<T_>&, T_*, T_*, T_*,       \
                                                     cell_acc_t<T_>*, cudaStream_t);              \
  template void launch_attention_pooling_backward<T_>(const PoolingArgs<T_>&,                     \
                                                      const PoolingGrads<T_>&, cudaStream_t);     \
  template void launch_masked_mean_forward<T_>(const T_*, const int64_t*, T_*, int64_t, int64_t,  \
                                               int64_t, int64_t, int64_t, cudaStream_t);          \
  template void launch_masked_mean_backward<T_>(const T_*, const int64_t*, T_*, int64_t, int64_t, \
                                                int64_t, cudaStream_t);                           \
  template void launch_rescale_forward<T_>(const T_*, const T_*, const int64_t*, T_*, int64_t,    \
                                           int64_t, int64_t, int64_t, int64_t, cudaStream_t);     \
  template void launch_rescale_backward<T_>(const T_*, const T_*, const T_*, const int64_t*, T_*, \
                                            T_*, int64_t, int64_t, int64_t, int64_t, int64_t,     \
                                            cudaStream_t);

}  // namespace cuda
}  // namespace lstm_fused
