// Additive attention pooling of an LSTM layer's outputs while the layer runs (the attentive
// LSTM of docs/contract.md section 2, CPU inference): the time loop writes its outputs h_t
// into a ring of `slots` steps (slots, B, R) instead of the whole (T, B, R) output, and after
// every `slots` steps hands the ring to add(); the ring is then overwritten by the next steps.
//
// Letters: T steps, B batch, R size of h_t, A attention size. For batch element b and step
// t < len[b]: e_t = v . tanh(W h_t + bias + u_b) (u = qproj, the projected query, or 0);
// the softmax over t and the context c = sum_t alpha_t h_t are kept online: a running maximum
// m, a running sum l = sum exp(e_t - m) and an unnormalised context sum exp(e_t - m) h_t, all
// rescaled by exp(m_old - m_new) when a block of steps raises the maximum. finish() divides by
// l and turns the raw scores into alpha. Steps t >= len[b] are never read (the ring holds
// whatever the loop wrote there) and get alpha 0; a row with no valid step gets c = 0,
// alpha = 0 and lse = -inf, as attention_pooling_forward does.
//
// Per block: W h for all its rows is one GEMM (slots * B, R) x (R, A) (block_projection),
// then each batch element's scores, rescale and weighted row sum (at::vec), rows in parallel.
// Runs outside any parallel region (between the loop's segments). float and double.
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>  // after capability.h

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/dispatch/Dispatcher.h>

#include "acc_rows.h"
#include "optional_tensor.h"
#include "switches.h"

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

// rows (M, R) W^T + bias -> (M, A); weight (A, R) contiguous, bias (A,) or undefined. float32
// through oneDNN's linear on the plain weight (mkldnn::_linear_pointwise, as
// lstm_fused/ops/cpu_linear.py does): ATen's matmul goes to MKL, about 2x slower on AMD CPUs,
// and packing the weight first saves nothing at these sizes (2-core AMD EPYC, 1 thread,
// (128, 512) x (512, 128) + bias: oneDNN 0.086 ms, packed 0.080 + 0.095 to pack, at::addmm
// 0.170). Other dtypes, or the switch cpu_gemm = "aten": at::addmm.
inline at::Tensor block_projection(const at::Tensor& rows, const at::Tensor& weight,
                                   const at::Tensor& bias) {
  static const std::optional<c10::OperatorHandle> linear =
      at::hasMKLDNN() ? c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""})
                      : std::nullopt;
  if (linear.has_value() && rows.scalar_type() == at::kFloat && rows.numel() > 0 &&
      switches().cpu_gemm != CpuGemm::Aten) {
    torch::jit::Stack stack{at::IValue(rows),
                            at::IValue(weight),
                            bias.defined() ? at::IValue(bias) : at::IValue(),
                            at::IValue(std::string("none")),
                            at::IValue(c10::List<std::optional<at::Scalar>>()),
                            at::IValue()};
    linear->callBoxed(&stack);
    return stack.at(0).toTensor();
  }
  return bias.defined() ? at::addmm(bias, rows, weight.t()) : at::mm(rows, weight.t());
}

class OnlinePooling {
 public:
  // ring (slots, B, R) contiguous, the buffer the loop writes; weight (A, R); bias (A,) or
  // undefined; v (A,); qproj (B, A) or undefined; len: valid steps per batch element; T steps.
  OnlinePooling(const at::Tensor& ring, const at::Tensor& weight, const at::Tensor& bias,
                const at::Tensor& v, const at::Tensor& qproj, const std::vector<int64_t>& len,
                int64_t T)
      : ring_(ring),
        weight_(weight.contiguous()),
        bias_(bias),
        v_(v.contiguous()),
        len_(len),
        T_(T) {
    const int64_t B = ring.size(1), R = ring.size(2);
    const int64_t A = weight.size(0);
    const auto opts = ring.options();
    u_ = qproj.defined() ? qproj.contiguous() : at::zeros({B, A}, opts);
    max_ = at::full({B}, -std::numeric_limits<double>::infinity(), opts);
    sum_ = at::zeros({B}, opts);
    context_ = at::zeros({B, R}, opts);
    scores_ = at::empty({B, T}, opts);
  }

  // Steps t0 .. t0 + n - 1, held in ring slots 0 .. n - 1.
  void add(int64_t t0, int64_t n) {
    const int64_t B = ring_.size(1), R = ring_.size(2);
    const at::Tensor proj =
        block_projection(ring_.narrow(0, 0, n).view({n * B, R}), weight_, bias_).contiguous();
    AT_DISPATCH_FLOATING_TYPES(ring_.scalar_type(), "attentive_lstm_pool_cpu",
                               [&] { add_block<scalar_t>(proj, t0, n); });
  }

  // (context (B, R), alpha (B, T), lse (B,)).
  std::tuple<at::Tensor, at::Tensor, at::Tensor> finish() {
    const int64_t B = ring_.size(1), R = ring_.size(2), T = T_;
    at::Tensor alpha = at::empty({B, T}, ring_.options());
    at::Tensor lse = at::empty({B}, ring_.options());
    AT_DISPATCH_FLOATING_TYPES(ring_.scalar_type(), "attentive_lstm_pool_finish_cpu", [&] {
      const scalar_t* m = max_.data_ptr<scalar_t>();
      const scalar_t* l = sum_.data_ptr<scalar_t>();
      const scalar_t* e = scores_.data_ptr<scalar_t>();
      scalar_t* ctx = context_.data_ptr<scalar_t>();
      scalar_t* a = alpha.data_ptr<scalar_t>();
      scalar_t* lse_p = lse.data_ptr<scalar_t>();
      for (int64_t b = 0; b < B; ++b) {
        const int64_t n = len_[b];
        // l >= 1 once a step is valid (the step at the maximum adds exp(0)).
        const scalar_t inv = n > 0 ? scalar_t(1) / l[b] : scalar_t(0);
        const scalar_t total =
            n > 0 ? m[b] + std::log(l[b]) : -std::numeric_limits<scalar_t>::infinity();
        for (int64_t r = 0; r < R; ++r) ctx[b * R + r] *= inv;
        for (int64_t t = 0; t < T; ++t)
          a[b * T + t] = t < n ? std::exp(e[b * T + t] - total) : scalar_t(0);
        lse_p[b] = total;
      }
    });
    return {context_, alpha, lse};
  }

 private:
  // proj_rows (n * B, A): W h + bias of the block's rows.
  template <typename scalar_t>
  void add_block(const at::Tensor& proj_rows, int64_t t0, int64_t n) {
    using V = at::vec::Vectorized<scalar_t>;
    const int64_t B = ring_.size(1), R = ring_.size(2), A = proj_rows.size(1), T = T_;
    const scalar_t* ring = ring_.data_ptr<scalar_t>();
    const scalar_t* proj = proj_rows.data_ptr<scalar_t>();
    const scalar_t* u = u_.data_ptr<scalar_t>();
    const scalar_t* v = v_.data_ptr<scalar_t>();
    scalar_t* m = max_.data_ptr<scalar_t>();
    scalar_t* l = sum_.data_ptr<scalar_t>();
    scalar_t* ctx = context_.data_ptr<scalar_t>();
    scalar_t* scores = scores_.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> w(n), block_sum(R);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t valid = std::clamp<int64_t>(len_[b] - t0, 0, n);
        if (valid == 0) continue;
        scalar_t* e = scores + b * T + t0;
        scalar_t top = m[b];
        for (int64_t i = 0; i < valid; ++i) {
          e[i] = additive_score(proj + (i * B + b) * A, u + b * A, v, A);
          top = std::max(top, e[i]);
        }
        // exp(-inf - finite) = 0: the first block rescales nothing.
        const scalar_t rescale = std::exp(m[b] - top);
        scalar_t s = 0;
        for (int64_t i = 0; i < valid; ++i) s += (w[i] = std::exp(e[i] - top));
        weighted_row_sum(w.data(), ring + b * R, B * R, valid, R, block_sum.data());
        scalar_t* c = ctx + b * R;
        at::vec::map2([rescale](V old, V add) { return old * V(rescale) + add; }, c, c,
                      block_sum.data(), R);
        l[b] = l[b] * rescale + s;
        m[b] = top;
      }
    });
  }

  at::Tensor ring_, weight_, bias_, v_, u_, max_, sum_, context_, scores_;
  std::vector<int64_t> len_;
  int64_t T_;
};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
