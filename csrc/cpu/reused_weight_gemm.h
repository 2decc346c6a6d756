// out (M, N) = in (M, K) W^T (+ bias (N)) for a weight W (N, K): the input projection of a
// layer (M = T*B) and the recurrent products of its time loop (the same W_hh every step, M = B).
//
// For float32 the weight is reordered once into oneDNN's blocked layout and every step runs
// oneDNN's matmul on it (mkldnn::_linear_pointwise, the path PyTorch's own CPU inference
// uses). Per step this avoids re-packing the whole weight, which is what a plain GEMM call does
// and what dominates when M is small. Other dtypes, or a PyTorch without those ops, or the
// switch cpu_gemm = "aten" (csrc/switches.h), or a small product (see the constructor), use
// at::mm.
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>

#include "switches.h"

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

class ReusedWeightGemm {
 public:
  // rows: M of each call; calls: how many calls will use the weight (the time loop's T).
  // transposed: `weight` is given as W^T (K, N) (a backward's product with a forward weight);
  // it is copied to (N, K) only if it gets packed.
  ReusedWeightGemm(const at::Tensor& weight, int64_t rows, int64_t calls,
                   const c10::optional<at::Tensor>& bias = c10::nullopt, bool transposed = false)
      : weight_(weight), bias_(bias), transposed_(transposed) {
    if (weight.scalar_type() != at::kFloat || rows <= 0 || weight.numel() == 0) return;
    // The reorder is one pass over the weight: not worth it for fewer than a few hundred rows
    // in all (an LSTMCell step, a layer call with T = 1).
    if (rows * calls < 256) return;
    // Below about 4M multiply-adds a call, oneDNN's per-call cost (primitive lookup, boxed
    // dispatch) outweighs what the packed weight saves (measured on the 2-core AMD EPYC: B=16,
    // H=128 is faster through at::mm; B=16, H=256 and up through oneDNN).
    if (rows * weight.numel() < (int64_t(1) << 22)) return;
    // A single product (a layer's input projection) pays the reorder
    // once; small ones are faster through at::mm. The 2^27 (about 134M multiply-adds) line is
    // set between two measurements, not at a measured crossover:
    // 2-core AMD EPYC: 26M faster through at::mm; 1.7G 16.6 ms through the reorder vs 23.9.
    if (calls == 1 && rows * weight.numel() < (int64_t(1) << 27)) return;
    if (switches().cpu_gemm == CpuGemm::Aten) return;
    const auto& ops = onednn_ops();
    if (!ops.available) return;
    torch::jit::Stack stack{at::IValue((transposed ? weight.t() : weight).contiguous()),
                            at::IValue(rows)};
    ops.reorder->callBoxed(&stack);
    packed_ = stack.at(0).toTensor();
  }

  // in (M, K) -> (M, N)
  at::Tensor operator()(const at::Tensor& in) const {
    if (!packed_.defined()) {
      const at::Tensor w_t = transposed_ ? weight_ : weight_.t();  // (K, N)
      return bias_.has_value() ? at::addmm(*bias_, in, w_t) : at::mm(in, w_t);
    }
    torch::jit::Stack stack{at::IValue(in),
                            at::IValue(packed_),
                            bias_.has_value() ? at::IValue(*bias_) : at::IValue(),
                            at::IValue(std::string("none")),
                            at::IValue(c10::List<std::optional<at::Scalar>>()),
                            at::IValue()};
    onednn_ops().linear->callBoxed(&stack);
    return stack.at(0).toTensor();
  }

 private:
  struct OneDNNOps {
    std::optional<c10::OperatorHandle> reorder, linear;
    bool available = false;
  };
  static const OneDNNOps& onednn_ops() {
    static const OneDNNOps ops = [] {
      OneDNNOps o;
      auto& d = c10::Dispatcher::singleton();
      auto reorder = d.findSchema({"mkldnn::_reorder_linear_weight", ""});
      auto linear = d.findSchema({"mkldnn::_linear_pointwise", ""});
      if (reorder.has_value() && linear.has_value() && at::hasMKLDNN()) {
        o.available = true;
        o.reorder = reorder;
        o.linear = linear;
      }
      return o;
    }();
    return ops;
  }

  at::Tensor weight_;  // (N, K), or (K, N) when transposed_
  bool transposed_;
  c10::optional<at::Tensor> bias_;  // (N)
  at::Tensor packed_;               // oneDNN's blocked copy of W (N, K), or undefined
};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
