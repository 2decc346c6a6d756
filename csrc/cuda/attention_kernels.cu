// CUDA kernels of the attention operators (schemas and layouts: csrc/attention_ops.cpp).
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
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <limits>

#include "attention_schemas.h"
#include "cuda/lstm_cuda_runtime.h"
#include "optional_tensor.h"

namespace lstm_fused {
namespace cuda {
namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

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
  s = (m == neg_inf<T>() ? T(0) : s * dexp(m - mx)) + (m2 == neg_inf<T>() ? T(0) : s2 * dexp(m2 - mx));
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
masked_softmax_fwd_kernel(const scalar_t* __restrict__ scores, const int64_t* __restrict__ lengths,
                          const bool* __restrict__ mask, scalar_t* __restrict__ out, int64_t N,
                          double scale_d) {
  using acc_t = at::opmath_type<scalar_t>;
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
    out[r * N + j] =
        take ? static_cast<scalar_t>(dexp(scale * static_cast<acc_t>(row[j]) - m) * inv) : scalar_t(0);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
masked_softmax_bwd_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ probs,
                          scalar_t* __restrict__ out, int64_t N, double scale_d) {
  using acc_t = at::opmath_type<scalar_t>;
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
    out[r * N + j] = p != 0 ? static_cast<scalar_t>(scale * p * (static_cast<acc_t>(grad[r * N + j]) - dot))
                            : scalar_t(0);
  }
}

// ------------------------------------------------------------------------- attention pooling

template <typename scalar_t>
struct PoolingArgs {
  const scalar_t* x;     // (B, T, D), strides xb, xt, 1
  const scalar_t* proj;  // (B, T, A), strides pb, pt, 1
  const scalar_t* v;     // (A,)
  const scalar_t* q;     // (B, A) or nullptr
  const int64_t* lengths;
  int64_t B, T, D, A, xb, xt, pb, pt;
};

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
                             at::opmath_type<scalar_t>* __restrict__ e_rows) {
  using acc_t = at::opmath_type<scalar_t>;
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
struct PoolingGrads {
  const scalar_t* gc;     // (B, D)
  const scalar_t* ga;     // (B, T)
  const scalar_t* glse;   // (B,)
  const scalar_t* alpha;  // (B, T)
  const scalar_t* context;  // (B, D)
  scalar_t* gx;           // (B, T, D)
  scalar_t* gproj;        // (B, T, A)
  at::opmath_type<scalar_t>* de_rows;  // (B, T) scratch
  at::opmath_type<scalar_t>* gv_rows;  // (B, A) per-b partial sums
  at::opmath_type<scalar_t>* gq_rows;  // (B, A)
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
attention_pooling_bwd_kernel(PoolingArgs<scalar_t> a, PoolingGrads<scalar_t> g) {
  using acc_t = at::opmath_type<scalar_t>;
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
                       scalar_t* __restrict__ mean, int64_t T, int64_t C, int64_t xb, int64_t xt) {
  using acc_t = at::opmath_type<scalar_t>;
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
  using acc_t = at::opmath_type<scalar_t>;
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
  using acc_t = at::opmath_type<scalar_t>;
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
  using acc_t = at::opmath_type<scalar_t>;
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

// ------------------------------------------------------------------------------- launchers

#define ATTN_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void check_cuda(const Tensor& t, const char* op, const char* name) {
#if defined(LSTM_FUSED_CUDA_EMULATION)
  TORCH_CHECK(t.is_cpu(), "lstm_fused_emu::", op, ": ", name, " must be on the CPU");
#else
  TORCH_CHECK(t.is_cuda(), "lstm_fused::", op, " (cuda backend): ", name, " is on ", t.device(),
              ", expected a CUDA tensor");
#endif
}

void check_dim(const Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == dim, "lstm_fused::", op, ": ", name, " must be ", dim,
                    "-D, got shape ", t.sizes());
}

// lengths (n,) int64 on x's device, or nullptr.
const int64_t* lengths_ptr(const OptTensor& lengths, const Tensor& like, int64_t n,
                           const char* op, Tensor& holder) {
  if (!present(lengths)) return nullptr;
  TORCH_CHECK_TYPE(lengths->scalar_type() == at::kLong, "lstm_fused::", op,
                   ": lengths must be int64, got ", lengths->scalar_type());
  TORCH_CHECK_VALUE(lengths->dim() == 1 && lengths->size(0) == n, "lstm_fused::", op,
                    ": lengths has shape ", lengths->sizes(), ", expected (", n, ",)");
  holder = lengths->to(like.device()).contiguous();
  return holder.data_ptr<int64_t>();
}

Tensor inner_contiguous(const Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

Tensor masked_softmax_forward(const Tensor& scores_in, const OptTensor& lengths,
                              const OptTensor& mask_in, double scale) {
  const char* op = "masked_softmax_forward";
  check_cuda(scores_in, op, "scores");
  check_dim(scores_in, 2, op, "scores");
  const DeviceScope scope(scores_in);
  const Tensor scores = scores_in.contiguous();
  const int64_t R = scores.size(0), N = scores.size(1);
  Tensor len_holder, mask;
  const int64_t* len = lengths_ptr(lengths, scores, R, op, len_holder);
  if (present(mask_in)) {
    TORCH_CHECK_TYPE(mask_in->scalar_type() == at::kBool, "lstm_fused::", op,
                     ": mask must be bool, got ", mask_in->scalar_type());
    TORCH_CHECK_VALUE(mask_in->sizes() == scores.sizes(), "lstm_fused::", op,
                      ": mask has shape ", mask_in->sizes(), ", expected ", scores.sizes());
    mask = mask_in->to(scores.device()).contiguous();
  }
  Tensor probs = at::empty_like(scores);
  if (R == 0 || N == 0) return probs;
  auto stream = scope.stream();
  ATTN_DISPATCH(scores.scalar_type(), "masked_softmax_forward_cuda", [&] {
    LSTM_FUSED_LAUNCH_BLOCKS(static_cast<unsigned int>(R), kThreads, 0, stream,
                             masked_softmax_fwd_kernel<scalar_t>)(
        scores.data_ptr<scalar_t>(), len, mask.defined() ? mask.data_ptr<bool>() : nullptr,
        probs.data_ptr<scalar_t>(), N, scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return probs;
}

Tensor masked_softmax_backward(const Tensor& grad_in, const Tensor& probs_in, double scale) {
  const char* op = "masked_softmax_backward";
  check_cuda(probs_in, op, "probs");
  check_dim(probs_in, 2, op, "probs");
  TORCH_CHECK_VALUE(grad_in.sizes() == probs_in.sizes(), "lstm_fused::", op,
                    ": grad_probs has shape ", grad_in.sizes(), ", expected ", probs_in.sizes());
  const DeviceScope scope(probs_in);
  const Tensor grad = grad_in.contiguous(), probs = probs_in.contiguous();
  const int64_t R = probs.size(0), N = probs.size(1);
  Tensor out = at::empty_like(probs);
  if (R == 0 || N == 0) return out;
  auto stream = scope.stream();
  ATTN_DISPATCH(probs.scalar_type(), "masked_softmax_backward_cuda", [&] {
    LSTM_FUSED_LAUNCH_BLOCKS(static_cast<unsigned int>(R), kThreads, 0, stream,
                             masked_softmax_bwd_kernel<scalar_t>)(
        grad.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N,
        scale);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

struct PoolingTensors {
  Tensor x, proj, v, q, len_holder;
  const int64_t* len = nullptr;
  int64_t B, T, D, A;
};

PoolingTensors pooling_tensors(const Tensor& x, const Tensor& proj, const Tensor& v,
                               const OptTensor& qproj, const OptTensor& lengths, const char* op) {
  check_cuda(x, op, "x");
  check_dim(x, 3, op, "x");
  check_dim(proj, 3, op, "proj");
  PoolingTensors p;
  p.B = x.size(0), p.T = x.size(1), p.D = x.size(2), p.A = proj.size(2);
  TORCH_CHECK_VALUE(proj.size(0) == p.B && proj.size(1) == p.T, "lstm_fused::", op,
                    ": proj has shape ", proj.sizes(), ", expected (", p.B, ", ", p.T, ", A)");
  TORCH_CHECK_VALUE(v.dim() == 1 && v.size(0) == p.A, "lstm_fused::", op, ": v has shape ",
                    v.sizes(), ", expected (", p.A, ",)");
  TORCH_CHECK_TYPE(proj.scalar_type() == x.scalar_type() && v.scalar_type() == x.scalar_type(),
                   "lstm_fused::", op, ": proj and v must have x's dtype ", x.scalar_type());
  p.x = inner_contiguous(x);
  p.proj = inner_contiguous(proj);
  p.v = v.contiguous();
  if (present(qproj)) {
    TORCH_CHECK_VALUE(qproj->dim() == 2 && qproj->size(0) == p.B && qproj->size(1) == p.A,
                      "lstm_fused::", op, ": qproj has shape ", qproj->sizes(), ", expected (",
                      p.B, ", ", p.A, ")");
    p.q = qproj->contiguous();
  }
  p.len = lengths_ptr(lengths, x, p.B, op, p.len_holder);
  return p;
}

template <typename scalar_t>
PoolingArgs<scalar_t> pooling_args(const PoolingTensors& p) {
  PoolingArgs<scalar_t> a;
  a.x = p.x.data_ptr<scalar_t>();
  a.proj = p.proj.data_ptr<scalar_t>();
  a.v = p.v.data_ptr<scalar_t>();
  a.q = p.q.defined() ? p.q.data_ptr<scalar_t>() : nullptr;
  a.lengths = p.len;
  a.B = p.B, a.T = p.T, a.D = p.D, a.A = p.A;
  a.xb = p.x.stride(0), a.xt = p.x.stride(1), a.pb = p.proj.stride(0), a.pt = p.proj.stride(1);
  return a;
}

std::tuple<Tensor, Tensor, Tensor> attention_pooling_forward(
    const Tensor& x, const Tensor& proj, const Tensor& v, const OptTensor& qproj,
    const OptTensor& lengths) {
  const DeviceScope scope(x);
  const PoolingTensors p = pooling_tensors(x, proj, v, qproj, lengths, "attention_pooling_forward");
  Tensor context = at::empty({p.B, p.D}, p.x.options());
  Tensor alpha = at::empty({p.B, p.T}, p.x.options());
  Tensor lse = at::empty({p.B}, p.x.options());
  if (p.B == 0) return {context, alpha, lse};
  Tensor e_rows = at::empty({p.B, std::max<int64_t>(p.T, 1)},
                            p.x.options().dtype(at::toOpMathType(p.x.scalar_type())));
  auto stream = scope.stream();
  const dim3 grid(static_cast<unsigned int>(p.B), std::max(1u, blocks_for(p.D)));
  ATTN_DISPATCH(p.x.scalar_type(), "attention_pooling_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    LSTM_FUSED_LAUNCH_BLOCKS(grid, kThreads, 0, stream,
                             attention_pooling_fwd_kernel<scalar_t>)(
        pooling_args<scalar_t>(p), context.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(),
        lse.data_ptr<scalar_t>(), e_rows.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {context, alpha, lse};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> attention_pooling_backward(
    const Tensor& grad_context, const Tensor& grad_alpha, const Tensor& grad_lse, const Tensor& x,
    const Tensor& proj, const Tensor& v, const OptTensor& qproj, const OptTensor& lengths,
    const Tensor& alpha, const Tensor& context) {
  const DeviceScope scope(x);
  const PoolingTensors p =
      pooling_tensors(x, proj, v, qproj, lengths, "attention_pooling_backward");
  const Tensor gc = grad_context.contiguous(), ga = grad_alpha.contiguous();
  const Tensor gl = grad_lse.contiguous(), al = alpha.contiguous(), ctx = context.contiguous();
  Tensor grad_x = at::empty({p.B, p.T, p.D}, p.x.options());
  Tensor grad_proj = at::empty({p.B, p.T, p.A}, p.x.options());
  const auto acc_opts = p.x.options().dtype(at::toOpMathType(p.x.scalar_type()));
  Tensor de_rows = at::empty({p.B, std::max<int64_t>(p.T, 1)}, acc_opts);
  Tensor gv_rows = at::empty({p.B, p.A}, acc_opts);
  Tensor gq_rows = at::empty({p.B, p.A}, acc_opts);
  if (p.B > 0) {
    auto stream = scope.stream();
    ATTN_DISPATCH(p.x.scalar_type(), "attention_pooling_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      PoolingGrads<scalar_t> g;
      g.gc = gc.data_ptr<scalar_t>();
      g.ga = ga.data_ptr<scalar_t>();
      g.glse = gl.data_ptr<scalar_t>();
      g.alpha = al.data_ptr<scalar_t>();
      g.context = ctx.data_ptr<scalar_t>();
      g.gx = grad_x.data_ptr<scalar_t>();
      g.gproj = grad_proj.data_ptr<scalar_t>();
      g.de_rows = de_rows.data_ptr<acc_t>();
      g.gv_rows = gv_rows.data_ptr<acc_t>();
      g.gq_rows = gq_rows.data_ptr<acc_t>();
      LSTM_FUSED_LAUNCH_BLOCKS(static_cast<unsigned int>(p.B), kThreads, 0, stream,
                               attention_pooling_bwd_kernel<scalar_t>)(pooling_args<scalar_t>(p), g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  Tensor grad_v = gv_rows.sum(0).to(p.x.scalar_type());
  Tensor grad_q = p.q.defined() ? gq_rows.to(p.x.scalar_type()) : at::empty({0}, p.x.options());
  return {grad_x, grad_proj, grad_v, grad_q};
}

Tensor channel_masked_mean_forward(const Tensor& x_in, const OptTensor& lengths) {
  const char* op = "channel_masked_mean_forward";
  check_cuda(x_in, op, "x");
  check_dim(x_in, 3, op, "x");
  const DeviceScope scope(x_in);
  const Tensor x = inner_contiguous(x_in);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, B, op, holder);
  Tensor mean = at::empty({B, C}, x.options());
  if (B == 0 || C == 0) return mean;
  auto stream = scope.stream();
  const dim3 grid(static_cast<unsigned int>(B), blocks_for(C));
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_forward_cuda", [&] {
    LSTM_FUSED_LAUNCH_BLOCKS(grid, kThreads, 0, stream,
                             masked_mean_fwd_kernel<scalar_t>)(
        x.data_ptr<scalar_t>(), len, mean.data_ptr<scalar_t>(), T, C, x.stride(0), x.stride(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return mean;
}

Tensor channel_masked_mean_backward(const Tensor& grad_mean, const Tensor& x,
                                    const OptTensor& lengths) {
  const char* op = "channel_masked_mean_backward";
  check_cuda(x, op, "x");
  check_dim(x, 3, op, "x");
  const DeviceScope scope(x);
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, B, op, holder);
  const Tensor gm = grad_mean.contiguous();
  Tensor grad_x = at::empty({B, T, C}, x.options());
  if (grad_x.numel() == 0) return grad_x;
  auto stream = scope.stream();
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_backward_cuda", [&] {
    LSTM_FUSED_LAUNCH_BLOCKS(blocks_for(B * T * C), kThreads, 0, stream,
                             masked_mean_bwd_kernel<scalar_t>)(
        gm.data_ptr<scalar_t>(), len, grad_x.data_ptr<scalar_t>(), B, T, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

void check_rescale(const Tensor& x, const Tensor& w, const char* op) {
  check_cuda(x, op, "x");
  check_dim(x, 3, op, "x");
  TORCH_CHECK_VALUE(w.dim() == 2 && w.size(0) == x.size(0) && w.size(1) == x.size(2),
                    "lstm_fused::", op, ": w has shape ", w.sizes(), ", expected (", x.size(0),
                    ", ", x.size(2), ")");
  TORCH_CHECK_TYPE(w.scalar_type() == x.scalar_type(), "lstm_fused::", op, ": w has dtype ",
                   w.scalar_type(), ", expected x's dtype ", x.scalar_type());
}

Tensor channel_rescale_forward(const Tensor& x_in, const Tensor& w_in, const OptTensor& lengths) {
  const char* op = "channel_rescale_forward";
  check_rescale(x_in, w_in, op);
  const DeviceScope scope(x_in);
  const Tensor x = inner_contiguous(x_in), w = w_in.contiguous();
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, B, op, holder);
  Tensor y = at::empty({B, T, C}, x.options());
  if (y.numel() == 0) return y;
  auto stream = scope.stream();
  ATTN_DISPATCH(x.scalar_type(), "channel_rescale_forward_cuda", [&] {
    LSTM_FUSED_LAUNCH_BLOCKS(blocks_for(B * T * C), kThreads, 0, stream,
                             rescale_fwd_kernel<scalar_t>)(
        x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), len, y.data_ptr<scalar_t>(), B, T, C,
        x.stride(0), x.stride(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<Tensor, Tensor> channel_rescale_backward(const Tensor& grad_y, const Tensor& x_in,
                                                    const Tensor& w_in, const OptTensor& lengths) {
  const char* op = "channel_rescale_backward";
  check_rescale(x_in, w_in, op);
  const DeviceScope scope(x_in);
  const Tensor x = inner_contiguous(x_in), w = w_in.contiguous(), gy = grad_y.contiguous();
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2);
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, B, op, holder);
  Tensor grad_x = at::empty({B, T, C}, x.options());
  Tensor grad_w = at::empty({B, C}, x.options());
  if (B == 0 || C == 0) return {grad_x, grad_w};
  auto stream = scope.stream();
  const dim3 grid(static_cast<unsigned int>(B), blocks_for(C));
  ATTN_DISPATCH(x.scalar_type(), "channel_rescale_backward_cuda", [&] {
    LSTM_FUSED_LAUNCH_BLOCKS(grid, kThreads, 0, stream,
                             rescale_bwd_kernel<scalar_t>)(
        gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), len,
        grad_x.data_ptr<scalar_t>(), grad_w.data_ptr<scalar_t>(), T, C, x.stride(0),
        x.stride(1));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_x, grad_w};
}

}  // namespace

#if defined(LSTM_FUSED_CUDA_EMULATION)
// The same schemas, in the namespace of the emulation test library.
TORCH_LIBRARY_FRAGMENT(lstm_fused_emu, m) { define_attention_ops(m); }
TORCH_LIBRARY_IMPL(lstm_fused_emu, CPU, m) {
#else
TORCH_LIBRARY_IMPL(lstm_fused, CUDA, m) {
#endif
  m.impl("masked_softmax_forward", &masked_softmax_forward);
  m.impl("masked_softmax_backward", &masked_softmax_backward);
  m.impl("attention_pooling_forward", &attention_pooling_forward);
  m.impl("attention_pooling_backward", &attention_pooling_backward);
  m.impl("channel_masked_mean_forward", &channel_masked_mean_forward);
  m.impl("channel_masked_mean_backward", &channel_masked_mean_backward);
  m.impl("channel_rescale_forward", &channel_rescale_forward);
  m.impl("channel_rescale_backward", &channel_rescale_backward);
}

}  // namespace cuda
}  // namespace lstm_fused
