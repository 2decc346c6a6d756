// Host code of the CUDA attention operators (schemas and layouts: csrc/attention_schemas.h):
// argument checks, the dtype dispatch and the TORCH_LIBRARY_IMPL registration, compiled by the
// host compiler. The kernels and their launchers are csrc/cuda/attention_kernels.cuh (one
// attention_kernels_<dtype>.cu per dtype). Under -DLSTM_FUSED_CUDA_EMULATION (tests only:
// tests/test_cuda_emulated.py) the same code registers CPU kernels of the test library
// lstm_fused_emu, whose launches run under the CPU emulation of tests/cuda_emu/.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

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
    launch_masked_softmax_forward<scalar_t>(
        scores.data_ptr<scalar_t>(), len, mask.defined() ? mask.data_ptr<bool>() : nullptr,
        probs.data_ptr<scalar_t>(), R, N, scale, stream);
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
    launch_masked_softmax_backward<scalar_t>(grad.data_ptr<scalar_t>(), probs.data_ptr<scalar_t>(),
                                             out.data_ptr<scalar_t>(), R, N, scale, stream);
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
  Tensor grad_x = at::empty({p.B, p.T, p.D}, p.x.options());
  Tensor grad_proj = at::empty({p.B, p.T, p.A}, p.x.options());
  const auto acc_opts = p.x.options().dtype(at::toOpMathType(p.x.scalar_type()));
  Tensor de_rows = at::empty({p.B, std::max<int64_t>(p.T, 1)}, acc_opts);
  Tensor gv_rows = at::empty({p.B, p.A}, acc_opts);
  Tensor gq_rows = at::empty({p.B, p.A}, acc_opts);
  if (p.B > 0) {
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
  ATTN_DISPATCH(x.scalar_type(), "channel_masked_mean_forward_cuda", [&] {
    launch_masked_mean_forward<scalar_t>(x.data_ptr<scalar_t>(), len, mean.data_ptr<scalar_t>(),
                                         B, T, C, x.stride(0), x.stride(1), stream);
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
    launch_masked_mean_backward<scalar_t>(gm.data_ptr<scalar_t>(), len,
                                          grad_x.data_ptr<scalar_t>(), B, T, C, stream);
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
    launch_rescale_forward<scalar_t>(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), len,
                                     y.data_ptr<scalar_t>(), B, T, C, x.stride(0), x.stride(1),
                                     stream);
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
