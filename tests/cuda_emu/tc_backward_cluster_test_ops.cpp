// Test-only operators of the sm_90 cluster backward loop alone
// (csrc/cuda/lstm_tc_backward_cluster.cuh), built with its kernel under the CPU emulation into a
// small library of its own by tests/test_cuda_emulated_tc_backward_cluster.py, namespace
// lstm_fused_tccluster_emu:
//   plan(B, H, D, P, dtype) -> (config, units, clusters, cluster, refusal):
//     plan_tc_backward_cluster on an emulated device (64 SMs, 227 KiB opt-in shared memory);
//   loop(gates, cells, c0, w_hh, w_peep?, lengths?, resets?, grad_y, grad_h_n, grad_c_n)
//     -> (dz (T, B, D, G), grad_h0 (D, B, H), grad_c0 (D, B, H)), outputs NaN-filled before the
//     launch (the arguments of tests/cuda_emu/tc_backward_test_ops.cpp's loop).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <string>
#include <tuple>

#include "cuda/lstm_tc_backward_cluster.cuh"

namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

constexpr int64_t kSms = 64;
constexpr size_t kSmemOptin = 227 * 1024;

template <typename T_>
T_* ptr(const Tensor& t) {
  return t.defined() ? reinterpret_cast<T_*>(t.data_ptr()) : nullptr;
}

std::tuple<int64_t, int64_t, int64_t, int64_t, std::string> plan_op(int64_t B, int64_t H,
                                                                    int64_t D, int64_t P,
                                                                    at::ScalarType dtype) {
  const lstm_fused::cuda::TcClusterPlan p = lstm_fused::cuda::plan_tc_backward_cluster(
      B, H, D, P, at::elementSize(dtype), kSms, kSmemOptin);
  return {p.config, p.units, p.clusters, p.cluster, p.refusal};
}

template <typename scalar_t>
void run(const Tensor& gates, const Tensor& cells, const Tensor& c0, const Tensor& w_hh,
         const Tensor& peep, const Tensor& lengths, const Tensor& resets, const Tensor& gy,
         const Tensor& ghn, const Tensor& gcn, Tensor& dz, Tensor& gh0, Tensor& gc0, int64_t T,
         int64_t B, int64_t H, int64_t D) {
  const lstm_fused::cuda::TcClusterPlan plan =
      lstm_fused::cuda::plan_tc_backward_cluster(B, H, D, 0, 2, kSms, kSmemOptin);
  TORCH_CHECK(plan.config >= 0, "cluster backward refused: ", plan.refusal);
  const lstm_fused::cuda::TcClusterConfig cfg = lstm_fused::cuda::kTcClusterConfigs[plan.config];
  Tensor exchange = at::zeros({2, D, 16 * cfg.mt, plan.k_total}, gates.options());
  Tensor flags = at::zeros({D, plan.ctas}, gates.options().dtype(at::kInt));
  lstm_fused::cuda::TcBackwardArgs<scalar_t> a;
  a.gates = ptr<scalar_t>(gates);
  a.cells = ptr<scalar_t>(cells);
  a.c0 = ptr<scalar_t>(c0);
  a.w_hh = ptr<scalar_t>(w_hh);
  a.peep = ptr<scalar_t>(peep);
  a.lengths = ptr<int64_t>(lengths);
  a.resets = ptr<bool>(resets);
  a.grad_y = ptr<scalar_t>(gy);
  a.grad_h_n = ptr<scalar_t>(ghn);
  a.grad_c_n = ptr<scalar_t>(gcn);
  a.dz = ptr<scalar_t>(dz);
  a.grad_h0 = ptr<scalar_t>(gh0);
  a.grad_c0 = ptr<scalar_t>(gc0);
  a.dz_exchange = ptr<scalar_t>(exchange);
  a.flags = ptr<unsigned>(flags);
  a.T = T;
  a.B = B;
  a.H = H;
  a.D = D;
  a.units = plan.units;
  a.ctas = plan.ctas;
  a.k_total = plan.k_total;
  lstm_fused::cuda::launch_tc_backward_cluster<scalar_t>(a, plan, nullptr);
}

std::tuple<Tensor, Tensor, Tensor> loop_op(const Tensor& gates, const Tensor& cells,
                                           const Tensor& c0, const Tensor& w_hh,
                                           const OptTensor& w_peep, const OptTensor& lengths,
                                           const OptTensor& resets, const Tensor& grad_y,
                                           const Tensor& grad_h_n, const Tensor& grad_c_n) {
  const int64_t D = gates.size(0), T = gates.size(1), B = gates.size(2), H = cells.size(3);
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  Tensor dz = at::full({T, B, D, 4 * H}, nan, gates.options());
  Tensor gh0 = at::full({D, B, H}, nan, gates.options());
  Tensor gc0 = at::full({D, B, H}, nan, gates.options());
  const Tensor peep = w_peep.has_value() ? w_peep->contiguous() : Tensor();
  const Tensor len = lengths.has_value() ? lengths->contiguous() : Tensor();
  const Tensor rst = resets.has_value() ? resets->contiguous() : Tensor();
  TORCH_CHECK(!rst.defined() || rst.scalar_type() == at::kBool, "resets must be bool");
  auto go = [&](auto zero) {
    using scalar_t = decltype(zero);
    run<scalar_t>(gates.contiguous(), cells.contiguous(), c0.contiguous(), w_hh.contiguous(),
                  peep, len, rst, grad_y.contiguous(), grad_h_n.contiguous(),
                  grad_c_n.contiguous(), dz, gh0, gc0, T, B, H, D);
  };
  if (gates.scalar_type() == at::kBFloat16)
    go(c10::BFloat16(0.0f));
  else if (gates.scalar_type() == at::kHalf)
    go(c10::Half(0.0f));
  else
    TORCH_CHECK_TYPE(false, "cluster backward: bfloat16 or float16, not ", gates.scalar_type());
  return {dz, gh0, gc0};
}

}  // namespace

TORCH_LIBRARY(lstm_fused_tccluster_emu, m) {
  m.def("plan(int B, int H, int D, int P, ScalarType dtype) -> (int, int, int, int, str)",
        &plan_op);
  m.def("loop(Tensor gates, Tensor cells, Tensor c0, Tensor w_hh, Tensor? w_peep, "
        "Tensor? lengths, Tensor? resets, Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n) "
        "-> (Tensor, Tensor, Tensor)",
        &loop_op);
}
