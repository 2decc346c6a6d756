// C++ CPU kernels of the attention operators (schemas and layouts: csrc/attention_schemas.h;
// argument checks: csrc/attention_args.h).
//
// The masked softmax walks a row once with an online max / sum: the running maximum m and the
// running sum s = sum exp(e - m) are rescaled when m grows, so scores are read once and the
// result is written in a second, write-only sweep. Attention pooling computes one batch
// element's scores first (T values), then its weighted sum, with at::vec loops over A and D.
// Padding (t >= lengths[b], or mask false) is skipped, never read: NaN or inf stored there
// cannot reach a result, and excluded positions get exactly 0. Rows are independent and run in
// parallel (at::parallel_for). Arithmetic is in opmath (float for half / bfloat16).
#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention_args.h"
#include "cpu/acc_rows.h"
#include "cpu/kernels.h"
#include "optional_tensor.h"

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h
namespace {

using at::Tensor;
using at::vec::Vectorized;
using OptTensor = c10::optional<Tensor>;

constexpr KernelDevice kCpu{at::kCPU, "cpu"};

// lengths (n,) read on the host, its values checked (csrc/lengths.h; all `limit` when absent).
std::vector<int64_t> read_op_lengths(const OptTensor& lengths, int64_t n, int64_t limit,
                                     const char* op) {
  return read_lengths(lengths, n, limit, (std::string("lstm_fused::") + op).c_str());
}

#define ATTN_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// ---------------------------------------------------------------------------- masked softmax

// One row of the masked softmax forward with at::vec, for float and double: a per-lane online
// max and sum over the kept positions (one read of the row), the lanes merged at the end, then
// the output. Excluded positions (j >= n, or mask false) are blended to -inf before use, so
// whatever they hold (NaN, inf) never reaches the result. Positions past n are never loaded.
template <typename T>
void masked_softmax_row_vec(const T* row, const bool* krow, T* orow, int64_t n, int64_t N, T sc) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t U = V::size();
  const V ninf(-std::numeric_limits<T>::infinity()), zero(T(0)), vsc(sc);
  const V lane = V::arange(T(0), T(1));
  alignas(64) T kept[U];
  // Lanes [j, j + U) that take part: inside the length and, with a mask, marked True.
  const auto keep_mask = [&](int64_t j) {
    const int64_t cnt = std::min(U, n - j);
    if (krow == nullptr) return V(lane < V(T(cnt)));
    for (int64_t l = 0; l < U; ++l) kept[l] = l < cnt && krow[j + l] ? T(1) : T(0);
    return V(V::loadu(kept) != zero);
  };
  V m = ninf, s = zero;
  for (int64_t j = 0; j < n; j += U) {
    const V keep = keep_mask(j);
    const V e = V::blendv(ninf, V::loadu(row + j, std::min(U, n - j)) * vsc, keep);
    const V m_new = at::vec::maximum(m, e);
    // Where a lane has seen nothing yet (m_new = -inf), measure from 0: both terms are 0.
    const V ref = V::blendv(m_new, zero, m_new == ninf);
    s = s * (m - ref).exp() + (e - ref).exp();
    m = m_new;
  }
  alignas(64) T m_l[U], s_l[U];
  m.store(m_l);
  s.store(s_l);
  T M = -std::numeric_limits<T>::infinity(), S = 0;
  for (int64_t l = 0; l < U; ++l) M = std::max(M, m_l[l]);
  if (M != -std::numeric_limits<T>::infinity())
    for (int64_t l = 0; l < U; ++l)
      if (s_l[l] != T(0)) S += s_l[l] * std::exp(m_l[l] - M);
  if (!(S > T(0))) {  // nothing kept (or NaN data: keep the NaN, as the scalar path does)
    std::fill(orow, orow + N, S != S ? S : T(0));
    return;
  }
  const V vM(M), inv(T(1) / S);
  int64_t j = 0;
  for (; j < n; j += U) {
    const int64_t cnt = std::min(U, n - j);
    const V p = (V::loadu(row + j, cnt) * vsc - vM).exp() * inv;
    V::blendv(zero, p, keep_mask(j)).store(orow + j, cnt);
  }
  std::fill(orow + n, orow + N, T(0));
}

Tensor masked_softmax_forward(const Tensor& scores_in, const OptTensor& lengths,
                              const OptTensor& mask_in, double scale) {
  const SoftmaxSizes sz = check_masked_softmax_args(scores_in, lengths, mask_in, kCpu);
  const int64_t R = sz.R, N = sz.N;
  const Tensor scores = scores_in.contiguous();
  const std::vector<int64_t> len = read_op_lengths(lengths, R, N, "masked_softmax_forward");
  const Tensor mask = present(mask_in) ? mask_in->to(at::kCPU).contiguous() : Tensor();
  Tensor probs = at::empty_like(scores);
  ATTN_DISPATCH(scores.scalar_type(), "masked_softmax_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = scores.data_ptr<scalar_t>();
    scalar_t* out = probs.data_ptr<scalar_t>();
    const bool* keep = mask.defined() ? mask.data_ptr<bool>() : nullptr;
    const acc_t sc = static_cast<acc_t>(scale);
    at::parallel_for(
        0, R, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const scalar_t* row = in + r * N;
            const bool* krow = keep ? keep + r * N : nullptr;
            scalar_t* orow = out + r * N;
            const int64_t n = len[r];
            if constexpr (std::is_same_v<scalar_t, acc_t>) {  // float, double
              masked_softmax_row_vec<scalar_t>(row, krow, orow, n, N, sc);
              continue;
            }
            acc_t m = -std::numeric_limits<acc_t>::infinity(), s = 0;
            for (int64_t j = 0; j < n; ++j) {  // online max and sum, one read of the row
              if (krow && !krow[j]) continue;
              const acc_t e = sc * static_cast<acc_t>(row[j]);
              if (e > m) {
                s = s * std::exp(m - e) + acc_t(1);
                m = e;
              } else {
                s += std::exp(e - m);
              }
            }
            const acc_t inv = s > 0 ? acc_t(1) / s : acc_t(0);
            for (int64_t j = 0; j < N; ++j) {
              const bool take = j < n && (!krow || krow[j]);
              orow[j] =
                  take ? static_cast<scalar_t>(std::exp(sc * static_cast<acc_t>(row[j]) - m) * inv)
                       : scalar_t(0);
            }
          }
        });
  });
  return probs;
}

// grad_scores = scale * p * (g - sum_j p_j g_j); positions with p = 0 (padding) give 0 and
// their incoming gradient is never read.
Tensor masked_softmax_backward(const Tensor& grad_in, const Tensor& probs_in, double scale) {
  const SoftmaxSizes sz = check_masked_softmax_backward_args(grad_in, probs_in, kCpu);
  const int64_t R = sz.R, N = sz.N;
  const Tensor grad = grad_in.contiguous(), probs = probs_in.contiguous();
  Tensor grad_scores = at::empty_like(probs);
  ATTN_DISPATCH(probs.scalar_type(), "masked_softmax_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = grad.data_ptr<scalar_t>();
    const scalar_t* p = probs.data_ptr<scalar_t>();
    scalar_t* out = grad_scores.data_ptr<scalar_t>();
    const acc_t sc = static_cast<acc_t>(scale);
    at::parallel_for(
        0, R, std::max<int64_t>(1, 4096 / std::max<int64_t>(N, 1)), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const scalar_t* gr = g + r * N;
            const scalar_t* pr = p + r * N;
            acc_t dot = 0;
            for (int64_t j = 0; j < N; ++j) {
              const acc_t pj = static_cast<acc_t>(pr[j]);
              if (pj != 0) dot += pj * static_cast<acc_t>(gr[j]);
            }
            for (int64_t j = 0; j < N; ++j) {
              const acc_t pj = static_cast<acc_t>(pr[j]);
              out[r * N + j] =
                  pj != 0 ? static_cast<scalar_t>(sc * pj * (static_cast<acc_t>(gr[j]) - dot))
                          : scalar_t(0);
            }
          }
        });
  });
  return grad_scores;
}

// ------------------------------------------------------------------------- attention pooling

// The checked inputs of a pooling call (attention_args.h) and its lengths read on the host.
struct PoolingCall : PoolingInputs {
  std::vector<int64_t> len;
};

PoolingCall pooling_call(const Tensor& x, const Tensor& proj, const Tensor& v,
                         const OptTensor& qproj, const OptTensor& lengths, const char* op) {
  PoolingCall in;
  static_cast<PoolingInputs&>(in) = pooling_inputs(x, proj, v, qproj, lengths, kCpu, op);
  in.len = read_op_lengths(lengths, in.s.B, in.s.T, op);
  return in;
}

// Per-thread buffers of the pooling kernels (acc_t rows; most stay empty for float / double).
template <typename acc_t>
struct PoolingWork {
  std::vector<acc_t> x, proj, v, u, e, ctx, c, gc, ga, alpha, gx, gp, th;
};

// Two passes over one batch element's valid steps t < n: the scores e_t = v . tanh(proj_t + u)
// (vectorised tanh and dot over A), then, after the max, the weighted sum of the rows x_t
// over D (weighted_row_sum). Padding is never read.
std::tuple<Tensor, Tensor, Tensor> attention_pooling_forward(const Tensor& x_in,
                                                             const Tensor& proj_in,
                                                             const Tensor& v_in,
                                                             const OptTensor& qproj_in,
                                                             const OptTensor& lengths) {
  const PoolingCall in =
      pooling_call(x_in, proj_in, v_in, qproj_in, lengths, "attention_pooling_forward");
  const int64_t B = in.s.B, T = in.s.T, D = in.s.D, A = in.s.A;
  Tensor context = at::empty({B, D}, in.x.options());
  Tensor alpha = at::empty({B, T}, in.x.options());
  Tensor lse = at::empty({B}, in.x.options());
  ATTN_DISPATCH(in.x.scalar_type(), "attention_pooling_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vectorized<acc_t>;
    const scalar_t* x = in.x.data_ptr<scalar_t>();
    const scalar_t* proj = in.proj.data_ptr<scalar_t>();
    const scalar_t* q = in.qproj.defined() ? in.qproj.data_ptr<scalar_t>() : nullptr;
    const int64_t xb = in.x.stride(0), xt = in.x.stride(1);
    const int64_t pb = in.proj.stride(0), pt = in.proj.stride(1);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      PoolingWork<acc_t> w;
      int64_t ld_unused, ldx, ldp;
      const acc_t* v = rows_as_acc(in.v.data_ptr<scalar_t>(), A, 1, A, w.v, &ld_unused);
      w.e.resize(T);
      w.u.assign(A, acc_t(0));
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t n = in.len[b];
        if (q != nullptr) {
          for (int64_t a = 0; a < A; ++a) w.u[a] = static_cast<acc_t>(q[b * A + a]);
        }
        const acc_t* X = rows_as_acc(x + b * xb, xt, n, D, w.x, &ldx);
        const acc_t* P = rows_as_acc(proj + b * pb, pt, n, A, w.proj, &ldp);
        acc_t* e = w.e.data();
        for (int64_t t = 0; t < n; ++t) {
          e[t] = additive_score(P + t * ldp, w.u.data(), v, A);
        }
        acc_t m = -std::numeric_limits<acc_t>::infinity(), s = 0;
        if (n > 0) {
          m = at::vec::reduce_all<acc_t>([](V a, V c) { return at::vec::maximum(a, c); }, e, n);
          at::vec::map([m](V y) { return (y - V(m)).exp(); }, e, e, n);
          s = at::vec::reduce_all<acc_t>([](V a, V c) { return a + c; }, e, n);
        }
        const acc_t inv = s > 0 ? acc_t(1) / s : acc_t(0);
        acc_t* ctx = out_rows(context.data_ptr<scalar_t>() + b * D, D, w.ctx);
        weighted_row_sum(e, X, ldx, n, D, ctx);
        at::vec::map([inv](V y) { return y * V(inv); }, ctx, ctx, D);
        store_rows(context.data_ptr<scalar_t>() + b * D, ctx, D);
        scalar_t* ar = alpha.data_ptr<scalar_t>() + b * T;
        for (int64_t t = 0; t < T; ++t)
          ar[t] = t < n ? static_cast<scalar_t>(e[t] * inv) : scalar_t(0);
        lse.data_ptr<scalar_t>()[b] = static_cast<scalar_t>(
            s > 0 ? m + std::log(s) : -std::numeric_limits<acc_t>::infinity());
      }
    });
  });
  return {context, alpha, lse};
}

// de_t = alpha_t (g_alpha_t + g_c . x_t - dot) + g_lse alpha_t, dot = sum alpha g_alpha + g_c . c;
// grad_x_t = alpha_t g_c; grad_proj_t = de_t v (1 - tanh^2); grad_v = sum de_t tanh(u_t);
// grad_qproj = sum_t grad_proj_t. Padding rows of grad_x, grad_proj are 0. Each step's loops
// over D and A are vectorised.
std::tuple<Tensor, Tensor, Tensor, Tensor> attention_pooling_backward(
    const Tensor& grad_context_in, const Tensor& grad_alpha_in, const Tensor& grad_lse_in,
    const Tensor& x_in, const Tensor& proj_in, const Tensor& v_in, const OptTensor& qproj_in,
    const OptTensor& lengths, const Tensor& alpha_in, const Tensor& context_in) {
  const PoolingCall in =
      pooling_call(x_in, proj_in, v_in, qproj_in, lengths, "attention_pooling_backward");
  const int64_t B = in.s.B, T = in.s.T, D = in.s.D, A = in.s.A;
  const Tensor gc = grad_context_in.contiguous(), ga = grad_alpha_in.contiguous();
  const Tensor gl = grad_lse_in.contiguous(), alpha = alpha_in.contiguous();
  const Tensor context = context_in.contiguous();
  Tensor grad_x = at::empty({B, T, D}, in.x.options());
  Tensor grad_proj = at::empty({B, T, A}, in.x.options());
  const auto acc_opts = in.x.options().dtype(at::toOpMathType(in.x.scalar_type()));
  Tensor gv_rows = at::empty({B, A}, acc_opts);  // per-b partial sums of grad_v
  Tensor gq_rows = at::empty({B, A}, acc_opts);
  ATTN_DISPATCH(in.x.scalar_type(), "attention_pooling_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    using V = Vectorized<acc_t>;
    constexpr int64_t kV = V::size();
    const scalar_t* x = in.x.data_ptr<scalar_t>();
    const scalar_t* proj = in.proj.data_ptr<scalar_t>();
    const scalar_t* q = in.qproj.defined() ? in.qproj.data_ptr<scalar_t>() : nullptr;
    const int64_t xb = in.x.stride(0), xt = in.x.stride(1);
    const int64_t pb = in.proj.stride(0), pt = in.proj.stride(1);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      PoolingWork<acc_t> w;
      int64_t ld1, ldx, ldp;
      const acc_t* v = rows_as_acc(in.v.data_ptr<scalar_t>(), A, 1, A, w.v, &ld1);
      w.u.assign(A, acc_t(0));
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t n = in.len[b];
        const acc_t* gcr = rows_as_acc(gc.data_ptr<scalar_t>() + b * D, D, 1, D, w.gc, &ld1);
        const acc_t* cr = rows_as_acc(context.data_ptr<scalar_t>() + b * D, D, 1, D, w.c, &ld1);
        const scalar_t* gar = ga.data_ptr<scalar_t>() + b * T;
        const scalar_t* alr = alpha.data_ptr<scalar_t>() + b * T;
        const acc_t glse = n > 0 ? static_cast<acc_t>(gl.data_ptr<scalar_t>()[b]) : acc_t(0);
        acc_t* gv = gv_rows.data_ptr<acc_t>() + b * A;
        acc_t* gq = gq_rows.data_ptr<acc_t>() + b * A;
        std::fill(gv, gv + A, acc_t(0));
        std::fill(gq, gq + A, acc_t(0));
        if (q != nullptr) {
          for (int64_t a = 0; a < A; ++a) w.u[a] = static_cast<acc_t>(q[b * A + a]);
        }
        acc_t dot_all = 0;
        if (n > 0) {
          for (int64_t t = 0; t < n; ++t) {
            dot_all += static_cast<acc_t>(alr[t]) * static_cast<acc_t>(gar[t]);
          }
          dot_all += dot(gcr, cr, D);
        }
        const acc_t* X = rows_as_acc(x + b * xb, xt, n, D, w.x, &ldx);
        const acc_t* P = rows_as_acc(proj + b * pb, pt, n, A, w.proj, &ldp);
        scalar_t* gxb = grad_x.data_ptr<scalar_t>() + b * T * D;
        scalar_t* gpb = grad_proj.data_ptr<scalar_t>() + b * T * A;
        for (int64_t t = 0; t < n; ++t) {
          const acc_t al = static_cast<acc_t>(alr[t]);
          acc_t* gx = out_rows(gxb + t * D, D, w.gx);
          at::vec::map([al](V g) { return g * V(al); }, gx, gcr, D);
          store_rows(gxb + t * D, gx, D);
          const acc_t de =
              al * (static_cast<acc_t>(gar[t]) + dot(gcr, X + t * ldx, D) - dot_all + glse);
          acc_t* gp = out_rows(gpb + t * A, A, w.gp);
          const acc_t* pr = P + t * ldp;
          for (int64_t a = 0; a < A; a += kV) {
            const int64_t cnt = std::min<int64_t>(kV, A - a);
            const V th = (V::loadu(pr + a, cnt) + V::loadu(w.u.data() + a, cnt)).tanh();
            const V g = V(de) * V::loadu(v + a, cnt) * (V(acc_t(1)) - th * th);
            g.store(gp + a, cnt);
            at::vec::fmadd(V(de), th, V::loadu(gv + a, cnt)).store(gv + a, cnt);
            (V::loadu(gq + a, cnt) + g).store(gq + a, cnt);
          }
          store_rows(gpb + t * A, gp, A);
        }
        std::fill(gxb + n * D, gxb + T * D, scalar_t(0));
        std::fill(gpb + n * A, gpb + T * A, scalar_t(0));
      }
    });
  });
  Tensor grad_v = gv_rows.sum(0).to(in.x.scalar_type());
  Tensor grad_q =
      in.qproj.defined() ? gq_rows.to(in.x.scalar_type()) : at::empty({0}, in.x.options());
  return {grad_x, grad_proj, grad_v, grad_q};
}

// ------------------------------------------------------------------------- channel attention

Tensor channel_masked_mean_forward(const Tensor& x_in, const OptTensor& lengths) {
  const char* op = "channel_masked_mean_forward";
  const ChannelSizes sz = check_channel_args(x_in, Tensor(), lengths, kCpu, op);
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const Tensor x = inner_contiguous(x_in);
  const std::vector<int64_t> len = read_op_lengths(lengths, B, T, op);
  Tensor mean = at::empty({B, C}, x.options());
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t xb = x.stride(0), xt = x.stride(1);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> acc(C);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t t = 0; t < len[b]; ++t) {
          const scalar_t* xr = xp + b * xb + t * xt;
          for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<acc_t>(xr[c]);
        }
        const acc_t inv = len[b] > 0 ? acc_t(1) / static_cast<acc_t>(len[b]) : acc_t(0);
        scalar_t* mr = mean.data_ptr<scalar_t>() + b * C;
        for (int64_t c = 0; c < C; ++c) mr[c] = static_cast<scalar_t>(acc[c] * inv);
      }
    });
  });
  return mean;
}

Tensor channel_masked_mean_backward(const Tensor& grad_mean_in, const Tensor& x,
                                    const OptTensor& lengths) {
  const char* op = "channel_masked_mean_backward";
  const ChannelSizes sz = check_channel_args(x, Tensor(), lengths, kCpu, op);
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const std::vector<int64_t> len = read_op_lengths(lengths, B, T, op);
  const Tensor gm = grad_mean_in.contiguous();
  Tensor grad_x = at::empty({B, T, C}, x.options());
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const acc_t inv = len[b] > 0 ? acc_t(1) / static_cast<acc_t>(len[b]) : acc_t(0);
        const scalar_t* gr = gm.data_ptr<scalar_t>() + b * C;
        scalar_t* out = grad_x.data_ptr<scalar_t>() + b * T * C;
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t c = 0; c < C; ++c) {
            out[t * C + c] =
                t < len[b] ? static_cast<scalar_t>(static_cast<acc_t>(gr[c]) * inv) : scalar_t(0);
          }
        }
      }
    });
  });
  return grad_x;
}

Tensor channel_rescale_forward(const Tensor& x_in, const Tensor& w_in, const OptTensor& lengths) {
  const char* op = "channel_rescale_forward";
  const ChannelSizes sz = check_channel_args(x_in, w_in, lengths, kCpu, op);
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const Tensor x = inner_contiguous(x_in), w = w_in.contiguous();
  const std::vector<int64_t> len = read_op_lengths(lengths, B, T, op);
  Tensor y = at::empty({B, T, C}, x.options());
  ATTN_DISPATCH(x.scalar_type(), "channel_rescale_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t xb = x.stride(0), xt = x.stride(1);
    at::parallel_for(
        0, B * T, std::max<int64_t>(1, 4096 / std::max<int64_t>(C, 1)),
        [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r / T, t = r % T;
            scalar_t* out = y.data_ptr<scalar_t>() + r * C;
            if (t >= len[b]) {
              std::fill(out, out + C, scalar_t(0));
              continue;
            }
            const scalar_t* xr = xp + b * xb + t * xt;
            const scalar_t* wr = w.data_ptr<scalar_t>() + b * C;
            for (int64_t c = 0; c < C; ++c) {
              out[c] = static_cast<scalar_t>(static_cast<acc_t>(xr[c]) * static_cast<acc_t>(wr[c]));
            }
          }
        });
  });
  return y;
}

std::tuple<Tensor, Tensor> channel_rescale_backward(const Tensor& grad_y_in, const Tensor& x_in,
                                                    const Tensor& w_in, const OptTensor& lengths) {
  const char* op = "channel_rescale_backward";
  const ChannelSizes sz = check_channel_args(x_in, w_in, lengths, kCpu, op);
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const Tensor x = inner_contiguous(x_in), w = w_in.contiguous();
  const Tensor gy = grad_y_in.contiguous();
  const std::vector<int64_t> len = read_op_lengths(lengths, B, T, op);
  Tensor grad_x = at::empty({B, T, C}, x.options());
  Tensor grad_w = at::empty({B, C}, x.options());
  ATTN_DISPATCH(x.scalar_type(), "channel_rescale_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const int64_t xb = x.stride(0), xt = x.stride(1);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> gw(C);
      for (int64_t b = b0; b < b1; ++b) {
        std::fill(gw.begin(), gw.end(), acc_t(0));
        const scalar_t* wr = w.data_ptr<scalar_t>() + b * C;
        scalar_t* gxb = grad_x.data_ptr<scalar_t>() + b * T * C;
        for (int64_t t = 0; t < len[b]; ++t) {
          const scalar_t* xr = xp + b * xb + t * xt;
          const scalar_t* gr = gy.data_ptr<scalar_t>() + (b * T + t) * C;
          for (int64_t c = 0; c < C; ++c) {
            const acc_t g = static_cast<acc_t>(gr[c]);
            gxb[t * C + c] = static_cast<scalar_t>(g * static_cast<acc_t>(wr[c]));
            gw[c] += g * static_cast<acc_t>(xr[c]);
          }
        }
        std::fill(gxb + len[b] * C, gxb + T * C, scalar_t(0));
        scalar_t* gwr = grad_w.data_ptr<scalar_t>() + b * C;
        for (int64_t c = 0; c < C; ++c) gwr[c] = static_cast<scalar_t>(gw[c]);
      }
    });
  });
  return {grad_x, grad_w};
}

}  // namespace

// This variant's entries (kernels.h); registered for the CPU by dispatch.cpp.
extern const AttentionKernels attention_kernels{
    &masked_softmax_forward,     &masked_softmax_backward,     &attention_pooling_forward,
    &attention_pooling_backward, &channel_masked_mean_forward, &channel_masked_mean_backward,
    &channel_rescale_forward,    &channel_rescale_backward};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
