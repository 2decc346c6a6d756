// CPU kernels of the multi-head self-attention core (schemas: csrc/mhsa_ops.cpp).
//
// Flash-style: a tile of query rows meets one tile of keys at a time; a running max m and a
// running sum l per query row (online softmax) rescale the accumulated context, so the T x T
// score matrix is never stored. Keys t >= lengths[b] are never read (the key loop stops at the
// length), so whatever the padding holds (NaN, inf) cannot reach the result.
// Backward recomputes the probabilities from the saved log-sum-exp (lse):
//   p_ij = exp(scale q_i.k_j - lse_i),  D_i = dO_i . O_i,  ds_ij = p_ij (dO_i . v_j - D_i)
//   dQ_i = scale sum_j ds_ij k_j,  dK_j = scale sum_i ds_ij q_i,  dV_j = sum_i p_ij dO_i
// Parallel over the B * N (batch row, head) pairs, which are independent.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "mhsa_args.h"

namespace lstm_fused {
namespace {

constexpr int64_t kQueryTile = 32;
constexpr int64_t kKeyTile = 64;

int64_t length_of(const int64_t* lengths, int64_t b, int64_t T) {
  return lengths == nullptr ? T : std::min<int64_t>(std::max<int64_t>(lengths[b], 0), T);
}

template <typename scalar_t, typename acc_t>
acc_t dot(const scalar_t* a, const scalar_t* b, int64_t n) {
  acc_t s = 0;
  for (int64_t d = 0; d < n; ++d) s += static_cast<acc_t>(a[d]) * static_cast<acc_t>(b[d]);
  return s;
}

// One (batch row, head): q, k, v, out (T, Dh) contiguous; lse (T,).
template <typename scalar_t, typename acc_t>
void forward_head(const scalar_t* q, const scalar_t* k, const scalar_t* v, scalar_t* out,
                  acc_t* lse, int64_t T, int64_t Dh, int64_t len, acc_t scale) {
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  std::vector<acc_t> m(kQueryTile), l(kQueryTile), acc(kQueryTile * Dh), s(kKeyTile);
  for (int64_t i0 = 0; i0 < T; i0 += kQueryTile) {
    const int64_t rows = std::min(kQueryTile, T - i0);
    std::fill(m.begin(), m.end(), neg_inf);
    std::fill(l.begin(), l.end(), acc_t(0));
    std::fill(acc.begin(), acc.end(), acc_t(0));
    for (int64_t j0 = 0; j0 < len; j0 += kKeyTile) {
      const int64_t cols = std::min(kKeyTile, len - j0);
      for (int64_t r = 0; r < rows; ++r) {
        const scalar_t* qi = q + (i0 + r) * Dh;
        acc_t tile_max = neg_inf;
        for (int64_t c = 0; c < cols; ++c) {
          s[c] = scale * dot<scalar_t, acc_t>(qi, k + (j0 + c) * Dh, Dh);
          tile_max = std::max(tile_max, s[c]);
        }
        const acc_t m_new = std::max(m[r], tile_max);
        const acc_t rescale = std::exp(m[r] - m_new);  // 0 on the first tile (m = -inf)
        acc_t* a = acc.data() + r * Dh;
        acc_t row_sum = 0;
        for (int64_t d = 0; d < Dh; ++d) a[d] *= rescale;
        for (int64_t c = 0; c < cols; ++c) {
          const acc_t p = std::exp(s[c] - m_new);
          row_sum += p;
          const scalar_t* vj = v + (j0 + c) * Dh;
          for (int64_t d = 0; d < Dh; ++d) a[d] += p * static_cast<acc_t>(vj[d]);
        }
        l[r] = l[r] * rescale + row_sum;
        m[r] = m_new;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      scalar_t* o = out + (i0 + r) * Dh;
      if (len == 0) {  // no valid key: zero context, lse = log(0)
        for (int64_t d = 0; d < Dh; ++d) o[d] = scalar_t(0);
        lse[i0 + r] = neg_inf;
        continue;
      }
      const acc_t inv = acc_t(1) / l[r];
      for (int64_t d = 0; d < Dh; ++d) o[d] = static_cast<scalar_t>(acc[r * Dh + d] * inv);
      lse[i0 + r] = m[r] + std::log(l[r]);
    }
  }
}

template <typename scalar_t, typename acc_t>
void backward_head(const scalar_t* dout, const scalar_t* q, const scalar_t* k,
                   const scalar_t* v, const scalar_t* out, const acc_t* lse, scalar_t* dq,
                   scalar_t* dk, scalar_t* dv, int64_t T, int64_t Dh, int64_t len,
                   acc_t scale) {
  std::vector<acc_t> dk_acc(len * Dh, acc_t(0)), dv_acc(len * Dh, acc_t(0)), dq_acc(Dh);
  for (int64_t i = 0; i < T; ++i) {
    const scalar_t* qi = q + i * Dh;
    const scalar_t* doi = dout + i * Dh;
    const acc_t delta = dot<scalar_t, acc_t>(doi, out + i * Dh, Dh);
    std::fill(dq_acc.begin(), dq_acc.end(), acc_t(0));
    for (int64_t j = 0; j < len; ++j) {
      const scalar_t* kj = k + j * Dh;
      const acc_t p = std::exp(scale * dot<scalar_t, acc_t>(qi, kj, Dh) - lse[i]);
      const acc_t ds = p * (dot<scalar_t, acc_t>(doi, v + j * Dh, Dh) - delta);
      acc_t* dkj = dk_acc.data() + j * Dh;
      acc_t* dvj = dv_acc.data() + j * Dh;
      for (int64_t d = 0; d < Dh; ++d) {
        dvj[d] += p * static_cast<acc_t>(doi[d]);
        dq_acc[d] += ds * static_cast<acc_t>(kj[d]);
        dkj[d] += ds * static_cast<acc_t>(qi[d]);
      }
    }
    for (int64_t d = 0; d < Dh; ++d) dq[i * Dh + d] = static_cast<scalar_t>(scale * dq_acc[d]);
  }
  for (int64_t j = 0; j < T; ++j) {  // padded keys (j >= len) get zero gradient
    for (int64_t d = 0; d < Dh; ++d) {
      const bool valid = j < len;
      dk[j * Dh + d] = static_cast<scalar_t>(valid ? scale * dk_acc[j * Dh + d] : acc_t(0));
      dv[j * Dh + d] = static_cast<scalar_t>(valid ? dv_acc[j * Dh + d] : acc_t(0));
    }
  }
}

at::Tensor lengths_cpu(const c10::optional<at::Tensor>& lengths) {
  if (!lengths.has_value() || !lengths->defined()) return at::Tensor();
  return lengths->contiguous();
}

std::tuple<at::Tensor, at::Tensor> mhsa_forward_cpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                                    const at::Tensor& v_in,
                                                    const c10::optional<at::Tensor>& lengths,
                                                    double scale) {
  const MhsaSizes s = check_mhsa_args(q_in, k_in, v_in, lengths);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor len_t = lengths_cpu(lengths);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({s.B, s.N, s.T}, q.options().dtype(mhsa_acc_type(q.scalar_type())));
  const int64_t* len_ptr = len_t.defined() ? len_t.data_ptr<int64_t>() : nullptr;
  const int64_t head = s.T * s.Dh;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    acc_t* lp = lse.data_ptr<acc_t>();
    at::parallel_for(0, s.B * s.N, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t len = length_of(len_ptr, h / s.N, s.T);
        forward_head<scalar_t, acc_t>(qp + h * head, kp + h * head, vp + h * head,
                                      op + h * head, lp + h * s.T, s.T, s.Dh, len,
                                      static_cast<acc_t>(scale));
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mhsa_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, const c10::optional<at::Tensor>& lengths, double scale,
    const at::Tensor& out_in, const at::Tensor& lse_in) {
  const MhsaSizes s = check_mhsa_args(q_in, k_in, v_in, lengths);
  check_mhsa_backward_args(s, grad_out_in, q_in, out_in, lse_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor dout = grad_out_in.contiguous().to(q.scalar_type());
  const at::Tensor out = out_in.contiguous(), lse = lse_in.contiguous();
  const at::Tensor len_t = lengths_cpu(lengths);
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  const int64_t* len_ptr = len_t.defined() ? len_t.data_ptr<int64_t>() : nullptr;
  const int64_t head = s.T * s.Dh;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* dop = dout.data_ptr<scalar_t>();
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    const scalar_t* op = out.data_ptr<scalar_t>();
    const acc_t* lp = lse.data_ptr<acc_t>();
    scalar_t* dqp = dq.data_ptr<scalar_t>();
    scalar_t* dkp = dk.data_ptr<scalar_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    at::parallel_for(0, s.B * s.N, 1, [&](int64_t h0, int64_t h1) {
      for (int64_t h = h0; h < h1; ++h) {
        const int64_t len = length_of(len_ptr, h / s.N, s.T);
        const int64_t o = h * head;
        backward_head<scalar_t, acc_t>(dop + o, qp + o, kp + o, vp + o, op + o, lp + h * s.T,
                                       dqp + o, dkp + o, dvp + o, s.T, s.Dh, len,
                                       static_cast<acc_t>(scale));
      }
    });
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_fused, CPU, m) {
  m.impl("mhsa_forward", &mhsa_forward_cpu);
  m.impl("mhsa_backward", &mhsa_backward_cpu);
}

}  // namespace lstm_fused
