// Host code of the CUDA attention operators (schemas and layouts: csrc/attention_schemas.h;
// argument checks: csrc/attention_args.h): the dtype dispatch and the TORCH_LIBRARY_IMPL
// registration, compiled by the host compiler. The kernels and their launchers are
// csrc/cuda/attention_kernels.cuh (one attention_kernels_<dtype>.cu per dtype). Under
// -DLSTM_FUSED_CUDA_EMULATION (tests only: tests/test_cuda_emulated.py) the same code registers
// CPU kernels of the test library lstm_fused_emu, whose launches run under the CPU emulation of
// tests/cuda_emu/.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include "attention_args.h"
#include "attention_schemas.h"
#include "cuda/attention_launch.h"
#include "cuda/cuda_device_scope.h"
#include "optional_tensor.h"

namespace lstm_fused {
namespace cuda {
namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

#define ATTN_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

#if defined(LSTM_FUSED_CUDA_EMULATION)
constexpr KernelDevice kDevice{at::kCPU, "emulated cuda"};
#else
constexpr KernelDevice kDevice{at::kCUDA, "cuda"};
#endif

// lengths (n,) int64 (checked by attention_args.h) on x's device, or nullptr. Its values are
// not checked here (that would be a device synchronisation): 0 <= lengths[b] <= T is the
// caller's contract, checked on the host by lstm_fused.functional, and the kernels clamp each
// length into range where they read it (row_length in attention_kernels.cuh).
const int64_t* lengths_ptr(const OptTensor& lengths, const Tensor& like, Tensor& holder) {
  if (!present(lengths)) return nullptr;
  holder = lengths->to(like.device()).contiguous();
  return holder.data_ptr<int64_t>();
}

Tensor masked_softmax_forward(const Tensor& scores_in, const OptTensor& lengths,
                              const OptTensor& mask_in, double scale) {
  const SoftmaxSizes sz = check_masked_softmax_args(scores_in, lengths, mask_in, kDevice);
  const int64_t R = sz.R, N = sz.N;
  const DeviceScope scope(scores_in);
  const Tensor scores = scores_in.contiguous();
  Tensor len_holder;
  const int64_t* len = lengths_ptr(lengths, scores, len_holder);
  const Tensor mask = present(mask_in) ? mask_in->to(scores.device()).contiguous() : Tensor();
  Tensor probs = at::empty_like(scores);
  if (R == 0 || N == 0) return probs;
  auto stream = scope.stream();
  ATTN_DISPATCH(scores.scalar_type(), "masked_softmax_forward_cuda", [&] {
    launch_masked_softmax_forward<scalar_t>(scores.data_ptr<scalar_t>(), len,
                                            mask.defined() ? mask.data_ptr<bool>() : nullptr,
                                            probs.data_ptr<scalar_t>(), R, N, scale, stream);
  });
  return probs;
}

Tensor masked_softmax_backward(const Tensor& grad_in, const Tensor& probs_in, double scale) {
  const SoftmaxSizes sz = check_masked_softmax_backward_args(grad_in, probs_in, kDevice);
  const int64_t R = sz.R, N = sz.N;
  const DeviceScope scope(probs_in);
  const Tensor grad = grad_in.contiguous(), probs = probs_in.contiguous();
  Tensor out = at::empty_like(probs);
  if (R == 0 || N == 0) return out;
  auto stream = scope.stream();
  ATTN_DISPATCH(probs.scalar_type(), "masked_softmax_backward_cuda", [&] {
    launch_masked_softmax_backward<scalar_t>(grad.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(),
                                             out.data_ptr<scalar_t>(), R, N, scale, stream);
  });
  return out;
}

// The checked inputs of a pooling call (attention_args.h) and its lengths on the device.
struct PoolingTensors : PoolingInputs {
  Tensor len_holder;
  const int64_t* len = nullptr;
};

PoolingTensors pooling_tensors(const Tensor& x, const Tensor& proj, const Tensor& v,
                               const OptTensor& qproj, const OptTensor& lengths, const char* op) {
  PoolingTensors p;
  static_cast<PoolingInputs&>(p) = pooling_inputs(x, proj, v, qproj, lengths, kDevice, op);
  p.len = lengths_ptr(lengths, x, p.len_holder);
  return p;
}

template <typename scalar_t>
PoolingArgs<scalar_t> pooling_args(const PoolingTensors& p) {
  PoolingArgs<scalar_t> a;
  a.x = p.x.data_ptr<scalar_t>();
  a.proj = p.proj.data_ptr<scalar_t>();
  a.v = p.v.data_ptr<scalar_t>();
  a.q = p.qproj.defined() ? p.qproj.data_ptr<scalar_t>() : nullptr;
  a.lengths = p.len;
  a.B = p.s.B, a.T = p.s.T, a.D = p.s.D, a.A = p.s.A;
  a.xb = p.x.stride(0), a.xt = p.x.stride(1), a.pb = p.proj.stride(0), a.pt = p.proj.stride(1);
  return a;
}

std::tuple<Tensor, Tensor, Tensor> attention_pooling_forward(const Tensor& x, const Tensor& proj,
                                                             const Tensor& v,
                                                             const OptTensor& qproj,
                                                             const OptTensor& lengths) {
  const DeviceScope scope(x);
  const PoolingTensors p = pooling_tensors(x, proj, v, qproj, lengths, "attention_pooling_forward");
  Tensor context = at::empty({p.s.B, p.s.D}, p.x.options());
  Tensor alpha = at::empty({p.s.B, p.s.T}, p.x.options());
  Tensor lse = at::empty({p.s.B}, p.x.options());
  if (p.s.B == 0) return {context, alpha, lse};
  Tensor e_rows = at::empty({p.s.B, std::max<int64_t>(p.s.T, 1)},
                            p.x.options().dtype(at::toOpMathType(p.x.scalar_type())));
  auto stream = scope.stream();
  ATTN_DISPATCH(p.x.scalar_type(), "attention_pooling_forward_cuda", [&] {
    using acc_t = cell_acc_t<scalar_t>;
    launch_attention_pooling_forward<scalar_t>(
        pooling_args<scalar_t>(p), context.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(),
        lse.data_ptr<scalar_t>(), e_rows.data_ptr<acc_t>(), stream);
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
  Tensor grad_x = at::empty({p.s.B, p.s.T, p.s.D}, p.x.options());
  Tensor grad_proj = at::empty({p.s.B, p.s.T, p.s.A}, p.x.options());
  const auto acc_opts = p.x.options().dtype(at::toOpMathType(p.x.scalar_type()));
  Tensor de_rows = at::empty({p.s.B, std::max<int64_t>(p.s.T, 1)}, acc_opts);
  Tensor gv_rows = at::empty({p.s.B, p.s.A}, acc_opts);
  Tensor gq_rows = at::empty({p.s.B, p.s.A}, acc_opts);
  if (p.s.B > 0) {
    auto stream = scope.stream();
    ATTN_DISPATCH(p.x.scalar_type(), "attention_pooling_backward_cuda", [&] {
      using acc_t = cell_acc_t<scalar_t>;
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
      launch_attention_pooling_backward<scalar_t>(pooling_args<scalar_t>(p), g, stream);
    });
  }
  Tensor grad_v = gv_rows.sum(0).to(p.x.scalar_type());
  Tensor grad_q = p.qproj.defined() ? gq_rows.to(p.x.scalar_type()) : at::empty({0}, p.x.options());
  return {grad_x, grad_proj, grad_v, grad_q};
}

Tensor channel_masked_mean_forward(const Tensor& x_in, const OptTensor& lengths) {
  const ChannelSizes sz =
      check_channel_args(x_in, Tensor(), lengths, kDevice, "channel_masked_mean_forward");
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const DeviceScope scope(x_in);
  const Tensor x = inner_contiguous(x_in);
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, holder);
  Tensor mean = at::empty({B, C}, x.options());
  if (B == 0 || C == 0) return mean;
  auto stream = scope.stream();
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_forward_cuda", [&] {
    launch_masked_mean_forward<scalar_t>(x.data_ptr<scalar_t>(), len, mean.data_ptr<scalar_t>(), B,
                                         T, C, x.stride(0), x.stride(1), stream);
  });
  return mean;
}

Tensor channel_masked_mean_backward(const Tensor& grad_mean, const Tensor& x,
                                    const OptTensor& lengths) {
  const ChannelSizes sz =
      check_channel_args(x, Tensor(), lengths, kDevice, "channel_masked_mean_backward");
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const DeviceScope scope(x);
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, holder);
  const Tensor gm = grad_mean.contiguous();
  Tensor grad_x = at::empty({B, T, C}, x.options());
  if (grad_x.numel() == 0) return grad_x;
  auto stream = scope.stream();
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_backward_cuda", [&] {
    launch_masked_mean_backward<scalar_t>(gm.data_ptr<scalar_t>(), len, grad_x.data_ptr<scalar_t>(),
                                          B, T, C, stream);
  });
  return grad_x;
}

Tensor channel_rescale_forward(const Tensor& x_in, const Tensor& w_in, const OptTensor& lengths) {
  const ChannelSizes sz =
      check_channel_args(x_in, w_in, lengths, kDevice, "channel_rescale_forward");
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const DeviceScope scope(x_in);
  const Tensor x = inner_contiguous(x_in), w = w_in.contiguous();
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, holder);
  Tensor y = at::empty({B, T, C}, x.options());
  if (y.numel() == 0) return y;
  auto stream = scope.stream();
  ATTN_DISPATCH(x.scalar_type(), "channel_rescale_forward_cuda", [&] {
    launch_rescale_forward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), len,
                                     y.data_ptr<scalar_t>(), B, T, C, x.stride(0), x.stride(1),
                                     stream);
  });
  return y;
}

std::tuple<Tensor, Tensor> channel_rescale_backward(const Tensor& grad_y, const Tensor& x_in,
                                                    const Tensor& w_in, const OptTensor& lengths) {
  const ChannelSizes sz =
      check_channel_args(x_in, w_in, lengths, kDevice, "channel_rescale_backward");
  const int64_t B = sz.B, T = sz.T, C = sz.C;
  const DeviceScope scope(x_in);
  const Tensor x = inner_contiguous(x_in), w = w_in.contiguous(), gy = grad_y.contiguous();
  Tensor holder;
  const int64_t* len = lengths_ptr(lengths, x, holder);
  Tensor grad_x = at::empty({B, T, C}, x.options());
  Tensor grad_w = at::empty({B, C}, x.options());
  if (B == 0 || C == 0) return {grad_x, grad_w};
  auto stream = scope.stream();
  ATTN_DISPATCH(x.scalar_type(), "channel_rescale_backward_cuda", [&] {
    launch_rescale_backward<scalar_t>(gy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                      w.data_ptr<scalar_t>(), len, grad_x.data_ptr<scalar_t>(),
                                      grad_w.data_ptr<scalar_t>(), B, T, C, x.stride(0),
                                      x.stride(1), stream);
  });
  return {grad_x, grad_w};
}

}  // namespace

#if defined(LSTM_FUSED_CUDA_EMULATION)
// The emulation test library's CPU kernels (its schemas: tests/cuda_emu/emu_library.cpp).
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
