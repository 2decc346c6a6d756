// Host code of the CUDA self-attention core (schemas: csrc/attention_schemas.h; shapes and checks:
// csrc/mhsa_args.h): argument checks, the launch plan (csrc/cuda/mhsa_plan.h) checked against
// the device, the dtype dispatch and the TORCH_LIBRARY_IMPL registration, compiled by the host
// compiler. Kernels and launchers: csrc/cuda/mhsa_kernels.cuh (one
// mhsa_kernels_<dtype>_d<MAX_D>.cu per dtype and head-size bound). Under
// -DLSTM_FUSED_CUDA_EMULATION (tests/test_cuda_emulated.py) the same code registers CPU kernels
// of the test library lstm_fused_emu, run by the launch emulation of tests/cuda_emu/.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <string>

#include "attention_schemas.h"
#include "cuda/cuda_device_scope.h"
#include "cuda/mhsa_launch.h"
#include "cuda/mhsa_plan.h"
#include "lstm_cell_math.h"
#include "mhsa_args.h"

namespace lstm_fused {
namespace cuda {
namespace {

const int64_t* lengths_ptr(const at::Tensor& lengths) {
  return lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
}

// lengths (checked by mhsa_args.h; any device) on q's device.
at::Tensor device_lengths(const c10::optional<at::Tensor>& lengths, const at::Tensor& q) {
  return present(lengths) ? lengths->to(q.device()).contiguous() : at::Tensor();
}

// The plan of a call, refused (an error naming why) when it does not fit the device of q.
MhsaPlan checked_plan(const at::Tensor& q, int64_t Dh, const char* op) {
  const size_t acc_bytes = q.scalar_type() == at::kDouble ? sizeof(double) : sizeof(float);
  const MhsaPlan plan = plan_mhsa(Dh, acc_bytes);
  const size_t limit = device_smem_optin(q.device());
  const std::string why = mhsa_plan_refusal(plan, Dh, limit);
  TORCH_CHECK_VALUE(why.empty(), "lstm_fused::", op, " (cuda backend) cannot run this call: ", why,
                    " (dtype ", q.scalar_type(), ")");
  return plan;
}

// The kernels of MhsaOps (mhsa_args.h), which checks the arguments first.
std::tuple<at::Tensor, at::Tensor> mhsa_forward_cuda(const MhsaSizes& s,
                                                     const AttentionDropout& drop,
                                                     const at::Tensor& q_in, const at::Tensor& k_in,
                                                     const at::Tensor& v_in,
                                                     const c10::optional<at::Tensor>& lengths,
                                                     double scale) {
  const DeviceScope scope(q_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const at::Tensor len_t = device_lengths(lengths, q);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({s.B, s.N, s.T}, q.options().dtype(mhsa_acc_type(q.scalar_type())));
  if (out.numel() == 0) return {out, lse};
  const MhsaPlan plan = checked_plan(q, s.Dh, "mhsa_forward");
  const cudaStream_t stream = scope.stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_forward_cuda", [&] {
        using acc_t = cell_acc_t<scalar_t>;
        MhsaForwardParams<scalar_t> a;
        a.q = q.data_ptr<scalar_t>();
        a.k = k.data_ptr<scalar_t>();
        a.v = v.data_ptr<scalar_t>();
        a.lengths = lengths_ptr(len_t);
        a.out = out.data_ptr<scalar_t>();
        a.lse = lse.data_ptr<acc_t>();
        a.B = s.B, a.N = s.N, a.T = s.T;
        a.Dh = static_cast<int>(s.Dh);
        a.scale = static_cast<acc_t>(scale);
        a.drop = drop;
        dispatch_max_d(plan.max_d, [&](auto max_d) {
          launch_mhsa_forward<scalar_t, decltype(max_d)::value>(a, plan, stream);
        });
      });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mhsa_backward_cuda(const MhsaSizes& s,
                                                                  const AttentionDropout& drop,
                                                                  const MhsaBackwardInputs& in) {
  const DeviceScope scope(in.q);
  const at::Tensor q = in.q.contiguous(), k = in.k.contiguous(), v = in.v.contiguous();
  const at::Tensor dout = in.grad_out.to(q.scalar_type()).contiguous();
  const at::Tensor out = in.out.contiguous(), lse = in.lse.contiguous();
  const at::Tensor len_t = device_lengths(in.lengths, in.q);
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  if (dq.numel() == 0) return {dq, dk, dv};
  const MhsaPlan plan = checked_plan(q, s.Dh, "mhsa_backward");
  at::Tensor delta = at::empty({s.B, s.N, s.T}, lse.options());
  const cudaStream_t stream = scope.stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_backward_cuda", [&] {
        using acc_t = cell_acc_t<scalar_t>;
        MhsaBackwardParams<scalar_t> a;
        a.q = q.data_ptr<scalar_t>();
        a.k = k.data_ptr<scalar_t>();
        a.v = v.data_ptr<scalar_t>();
        a.dout = dout.data_ptr<scalar_t>();
        a.out = out.data_ptr<scalar_t>();
        a.lse = lse.data_ptr<acc_t>();
        a.lengths = lengths_ptr(len_t);
        a.delta = delta.data_ptr<acc_t>();
        a.dq = dq.data_ptr<scalar_t>();
        a.dk = dk.data_ptr<scalar_t>();
        a.dv = dv.data_ptr<scalar_t>();
        a.B = s.B, a.N = s.N, a.T = s.T;
        a.Dh = static_cast<int>(s.Dh);
        a.scale = static_cast<acc_t>(in.scale);
        a.drop = drop;
        a.keep_scale = static_cast<acc_t>(drop.keep_scale);
        dispatch_max_d(plan.max_d, [&](auto max_d) {
          launch_mhsa_backward<scalar_t, decltype(max_d)::value>(a, plan, stream);
        });
      });
  return {dq, dk, dv};
}

}  // namespace

#if defined(LSTM_FUSED_CUDA_EMULATION)
// The emulation test library's CPU kernels (its schemas: tests/cuda_emu/emu_library.cpp).
TORCH_LIBRARY_IMPL(lstm_fused_emu, CPU, m) {
#else
TORCH_LIBRARY_IMPL(lstm_fused, CUDA, m) {
#endif
  m.impl("mhsa_forward", &MhsaOps<&mhsa_forward_cuda, &mhsa_backward_cuda>::forward);
  m.impl("mhsa_backward", &MhsaOps<&mhsa_forward_cuda, &mhsa_backward_cuda>::backward);
}

}  // namespace cuda
}  // namespace lstm_fused
