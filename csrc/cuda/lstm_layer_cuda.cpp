// CUDA kernels of lstm_fused::lstm_layer_forward / lstm_layer_inference / lstm_layer_backward
// (TORCH_LIBRARY_IMPL CUDA), and the operator lstm_layer_cuda_path (which time loop a forward
// call takes, and why). Same semantics and saved layout as the CPU kernels
// (csrc/cpu/lstm_layer_cpu.cpp); shapes and checks: csrc/lstm_layer_args.h; letters:
// csrc/lstm_cell_math.h.
//
// Two paths run the time loop; both start with one GEMM for the input projections of every
// step and direction, and the backward ends with one GEMM per weight over all steps.
//
//   tensor-core path (forward of bfloat16 and float16, the default where it fits; written and
//     tested on the CPU emulation, not yet run on a GPU: cuda_path=gates avoids it): the whole
//     loop of both directions in one cooperative launch, W_hh in registers as mma.sync
//     fragments, h exchanged between CTAs through flags, no grid barrier
//     (lstm_tc_forward.cuh). Where it does not fit (projection, H not a multiple of 8, H or B
//     above the compiled configurations, CTAs that cannot all be resident, a device below
//     sm_80 or without cooperative launches) the gate-kernel path runs; the reason is what
//     the operator lstm_layer_cuda_path reports (docs/contract.md).
//   tensor-core backward (bfloat16 and float16, the default where it fits): the reverse loop
//     of both directions in one cooperative launch, W_hh columns in registers, dz rows
//     exchanged through flags (lstm_tc_backward.cuh); where it does not fit (projection, B or
//     4H above the compiled configurations, CTAs that cannot all be resident, a device below
//     sm_80 or without cooperative launches) the gate-kernel backward runs; the reason is
//     what the operator lstm_layer_cuda_backward_path reports (docs/contract.md).
//   gate-kernel path (every other call): per step one batched GEMM
//     (at::bmm_out, both directions) for the recurrent product, then one fused gate kernel
//     (lstm_gate_kernels.cu); with a projection, one more GEMM and a small copy kernel. The
//     backward runs the reverse loop the same way. Both forwards save the same gates/cells
//     layout, so either backward serves either forward.
//   float32 keeps the gate-kernel path: the tensor-core kernel would need tf32 (or split
//     bf16) products, not shown to stay within the float32 tolerance; float64 exists for
//     gradcheck, not for speed.
//
// Built with -DLSTM_FUSED_CUDA_EMULATION (tests/test_cuda_emulated.py only), this file registers
// the same code as CPU kernels of a test library, lstm_fused_emu, with the kernels run by a CPU
// emulation of their launches (tests/cuda_emu/; the tensor-core kernel with one OS thread per
// CUDA thread and its tiny emulation configurations, csrc/cuda/lstm_tc_plan.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <type_traits>

#include "cuda/cuda_device_scope.h"
#include "cuda/lstm_cuda_kernels.h"
#include "cuda/lstm_tc_backward.h"
#include "cuda/lstm_tc_forward.h"
#include "lstm_layer_args.h"
#include "lstm_layer_grads.h"
#include "lstm_layer_schemas.h"
#include "optional_tensor.h"
#include "switches.h"

namespace lstm_fused {
namespace cuda {
namespace {

using at::Tensor;
using OptTensor = c10::optional<Tensor>;

#if defined(LSTM_FUSED_CUDA_EMULATION)
constexpr LayerBackend kCuda{at::kCPU, "emulated cuda", /*half_types=*/true};
#else
constexpr LayerBackend kCuda{at::kCUDA, "cuda", /*half_types=*/true};
#endif

// lengths on the device of x (shape and dtype checked by check_layer_args), or undefined.
// Its values are not checked here, which would cost a device synchronisation:
// 0 <= lengths[b] <= T is the caller's contract, checked on the host by lstm_fused.functional.
// The kernels only compare t < lengths[b] for steps 0 <= t < T, which is memory-safe for any
// value (a length below 0 acts as 0, above T as T).
Tensor device_lengths(const OptTensor& lengths, const at::Device& device) {
  if (!present(lengths)) return Tensor();
  return lengths->to(device).contiguous();
}

template <typename T_>
T_* ptr(const Tensor& t) {
  return t.defined() ? reinterpret_cast<T_*>(t.data_ptr()) : nullptr;
}

template <typename scalar_t>
void forward_gate_path(const LSTMLayerSizes& s, const Tensor& gx, const Tensor& h0,
                       const Tensor& c0, const Tensor& w_hh, const OptTensor& w_hr,
                       const Tensor& peep, const Tensor& len, const Tensor& resets, Tensor& y,
                       Tensor& h_n, Tensor& c_n, Tensor& gates, Tensor& cells,
                       cudaStream_t stream) {
  const bool proj = s.P > 0;
  // The state lives in h_n and c_n (contiguous outputs): no copy at the end.
  Tensor& h_state = h_n.copy_(h0);  // (D, B, R)
  Tensor& c_state = c_n.copy_(c0);  // (D, B, H)
  Tensor z_rec = at::empty({s.D, s.B, s.G}, gx.options());
  const Tensor whh_t = w_hh.transpose(1, 2);  // (D, R, G)
  Tensor hpre = proj ? at::zeros({s.D, s.B, s.H}, gx.options()) : Tensor();
  Tensor rbuf = proj ? at::empty({s.D, s.B, s.P}, gx.options()) : Tensor();
  const Tensor whr_t = proj ? w_hr->transpose(1, 2) : Tensor();  // (D, H, P)

  GateForwardArgs<scalar_t> a;
  a.z_rec = ptr<scalar_t>(z_rec);
  a.gx = ptr<scalar_t>(gx);
  a.peep = ptr<scalar_t>(peep);
  a.lengths = ptr<int64_t>(len);
  a.c_state = ptr<scalar_t>(c_state);
  a.gates = ptr<scalar_t>(gates);
  a.cells = ptr<scalar_t>(cells);
  a.h_out = proj ? ptr<scalar_t>(hpre) : ptr<scalar_t>(h_state);
  a.y = proj ? nullptr : ptr<scalar_t>(y);
  a.T = s.T;
  a.B = s.B;
  a.H = s.H;
  a.D = s.D;
  const Tensor h0_c = h0.contiguous(), c0_c = c0.contiguous();
  a.resets = ptr<bool>(resets);
  a.h0 = proj ? nullptr : ptr<scalar_t>(h0_c);
  a.c0 = ptr<scalar_t>(c0_c);
  for (int64_t step = 0; step < s.T; ++step) {
    at::bmm_out(z_rec, h_state, whh_t);  // (D, B, G): r_{t-1} W_hh^T of both directions
    a.step = step;
    launch_gate_forward<scalar_t>(a, stream);
    if (proj) {
      at::bmm_out(rbuf, hpre, whr_t);  // (D, B, P)
      launch_proj_store<scalar_t>(ptr<scalar_t>(rbuf), ptr<scalar_t>(h_state), ptr<scalar_t>(y),
                                  a.lengths, s.T, s.B, s.P, s.D, step, a.resets,
                                  ptr<scalar_t>(h0_c), stream);
    }
  }
}

template <typename scalar_t>
constexpr bool is_16bit =
    std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// Why the tensor-core forward does not take this call ("" when it does), and its plan.
template <typename scalar_t>
TcForwardPlan tc_forward_plan(const LSTMLayerSizes& s, const at::Device& device) {
  TcForwardPlan plan;
  if (switches().cuda_path == CudaPath::Gates) {
    plan.reason = "the switch cuda_path is 'gates'";
  } else if constexpr (is_16bit<scalar_t>) {
    plan = plan_tc_forward<scalar_t>(device.index(), s.B, s.H, s.D, s.P);
  } else if constexpr (std::is_same_v<scalar_t, float>) {
    plan.reason =
        "float32 keeps the gate-kernel path (the tensor-core kernel computes with "
        "16-bit operands; tf32 is not shown to stay within the float32 tolerance)";
  } else {
    plan.reason = "float64 takes the gate-kernel path";
  }
  return plan;
}

// gates and cells undefined: not stored (inference).
template <typename scalar_t>
void forward_tc_path(const LSTMLayerSizes& s, const TcForwardPlan& plan, const Tensor& gx,
                     const Tensor& h0, const Tensor& c0, const Tensor& w_hh, const Tensor& peep,
                     const Tensor& len, const Tensor& resets, Tensor& y, Tensor& h_n, Tensor& c_n,
                     Tensor& gates, Tensor& cells, cudaStream_t stream) {
  Tensor h_exchange = at::empty({2, s.D, s.B, s.H}, gx.options());
  Tensor flags = at::zeros({static_cast<int64_t>(plan.flag_words)}, gx.options().dtype(at::kInt));
  const Tensor w_hh_c = w_hh.contiguous(), c0_c = c0.contiguous();
  // h0 is read with 16-byte cp.async: a contiguous view at an odd storage offset is copied.
  Tensor h0_c = h0.contiguous();
  if (reinterpret_cast<uintptr_t>(h0_c.data_ptr()) % 16 != 0) h0_c = h0_c.clone();
  TcForwardParams<scalar_t> a;
  a.gx = ptr<scalar_t>(gx);
  a.w_hh = ptr<scalar_t>(w_hh_c);
  a.h0 = ptr<scalar_t>(h0_c);
  a.c0 = ptr<scalar_t>(c0_c);
  a.peep = ptr<scalar_t>(peep);
  a.lengths = ptr<int64_t>(len);
  a.resets = ptr<bool>(resets);  // (T, B) bool, contiguous on the device (check_layer_args)
  a.y = ptr<scalar_t>(y);
  a.h_n = ptr<scalar_t>(h_n);
  a.c_n = ptr<scalar_t>(c_n);
  a.gates = ptr<scalar_t>(gates);
  a.cells = ptr<scalar_t>(cells);
  a.h_exchange = ptr<scalar_t>(h_exchange);
  a.flags = ptr<unsigned>(flags);
  a.T = s.T;
  a.B = s.B;
  a.H = s.H;
  a.D = s.D;
  launch_tc_forward<scalar_t>(a, plan, stream);
}

// Runs fn(scalar_t{}) for the storage type of x.
template <typename Fn>
void dispatch_storage(const Tensor& x, Fn&& fn) {
  switch (x.scalar_type()) {
    case at::kFloat:
      fn(float(0));
      break;
    case at::kDouble:
      fn(double(0));
      break;
    case at::kHalf:
      fn(c10::Half(0.0f));
      break;
    case at::kBFloat16:
      fn(c10::BFloat16(0.0f));
      break;
    default:
      TORCH_CHECK_TYPE(false, "lstm_fused (cuda backend): unsupported dtype ", x.scalar_type());
  }
}

// lstm_layer_forward (save = true) and lstm_layer_inference (save = false: gates and cells are
// not returned; the tensor-core kernel does not write them).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> layer_forward(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& resets, bool save) {
  const LSTMLayerSizes s =
      check_layer_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets, kCuda);
  const DeviceScope scope(x);  // x's device current; emulated: nothing, launches in order
  const cudaStream_t stream = scope.stream();
  const Tensor len = device_lengths(lengths, x.device());
  const auto opts = x.options();
  // Input projections of every step and both directions in one GEMM: (T*B, I) x (I, D*G).
  const Tensor x2 = x.reshape({s.T * s.B, s.I});
  const Tensor w2 = w_ih.reshape({s.D * s.G, s.I}).t();
  Tensor gx = present(bias) ? at::addmm(bias->reshape({s.D * s.G}), x2, w2) : at::mm(x2, w2);
  gx = gx.view({s.T, s.B, s.D, s.G}).contiguous();

  Tensor y = new_output({s.T, s.B, s.D * s.R}, opts);
  Tensor h_n = new_output({s.D, s.B, s.R}, opts);
  Tensor c_n = new_output({s.D, s.B, s.H}, opts);
  Tensor gates = save ? new_output({s.D, s.T, s.B, s.G}, opts) : Tensor();
  Tensor cells = save ? new_output({s.D, s.T, s.B, s.H}, opts) : Tensor();
  if (s.T == 0) {
    h_n.copy_(h0);
    c_n.copy_(c0);
    return {y, h_n, c_n, gates, cells};
  }
  const Tensor peep = present(w_peep) ? w_peep->contiguous() : Tensor();
  const Tensor resets_t = present(resets) ? *resets : Tensor();
  dispatch_storage(x, [&](auto zero) {
    using scalar_t = decltype(zero);
    if constexpr (is_16bit<scalar_t>) {
      const TcForwardPlan plan = tc_forward_plan<scalar_t>(s, x.device());
      if (plan.fits) {
        forward_tc_path<scalar_t>(s, plan, gx, h0, c0, w_hh, peep, len, resets_t, y, h_n, c_n,
                                  gates, cells, stream);
        return;
      }
    }
    // The gate path writes gates and cells as it goes.
    Tensor g = save ? gates : at::empty({s.D, s.T, s.B, s.G}, opts);
    Tensor c = save ? cells : at::empty({s.D, s.T, s.B, s.H}, opts);
    forward_gate_path<scalar_t>(s, gx, h0, c0, w_hh, w_hr, peep, len, resets_t, y, h_n, c_n, g, c,
                                stream);
  });
  return {y, h_n, c_n, gates, cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_layer_forward_cuda(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& resets) {
  return layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets,
                       /*save=*/true);
}

std::tuple<Tensor, Tensor, Tensor> lstm_layer_inference_cuda(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
    const OptTensor& resets) {
  auto out = layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets,
                           /*save=*/false);
  return {std::get<0>(out), std::get<1>(out), std::get<2>(out)};
}

// The sizes the path queries need, from x (T, B, I), w_hh (D, G, R) and w_hr (D, P, H) or None.
LSTMLayerSizes path_query_sizes(const char* op, const Tensor& x, const Tensor& w_hh,
                                const OptTensor& w_hr) {
  TORCH_CHECK(x.dim() == 3 && w_hh.dim() == 3, op, ": x must be (T, B, I) and w_hh (D, 4H, R)");
  LSTMLayerSizes s{};
  s.T = x.size(0);
  s.B = x.size(1);
  s.I = x.size(2);
  s.D = w_hh.size(0);
  s.G = w_hh.size(1);
  s.H = s.G / 4;
  s.P = present(w_hr) ? w_hr->size(1) : 0;
  s.R = s.P > 0 ? s.P : s.H;
  return s;
}

// Which loop lstm_layer_forward runs for these arguments: "tensor_core", or "gates: <why the
// tensor-core kernel does not take it>". x (T, B, I) on the device, w_hh (D, G, R), w_hr
// (D, P, H) or None; docs/contract.md.
std::string lstm_layer_cuda_path(const Tensor& x, const Tensor& w_hh, const OptTensor& w_hr) {
  const LSTMLayerSizes s = path_query_sizes("lstm_layer_cuda_path", x, w_hh, w_hr);
  std::string path;
  dispatch_storage(x, [&](auto zero) {
    using scalar_t = decltype(zero);
    const TcForwardPlan plan = tc_forward_plan<scalar_t>(s, x.device());
    path = plan.fits ? "tensor_core" : "gates: " + plan.reason;
  });
  return path;
}

template <typename scalar_t>
void backward_gate_path(const LSTMLayerSizes& s, const Tensor& gy, const Tensor& grad_h_n,
                        const Tensor& grad_c_n, const Tensor& c0, const Tensor& w_hh,
                        const OptTensor& w_hr, const Tensor& peep, const Tensor& len,
                        const Tensor& resets, const Tensor& gates, const Tensor& cells, Tensor& dZ,
                        Tensor& dR, Tensor& grad_h0, Tensor& grad_c0, cudaStream_t stream) {
  const bool proj = s.P > 0;
  const auto opts = gy.options();
  Tensor dh_state = grad_h_n.contiguous().clone();  // (D, B, R)
  Tensor dc_state = grad_c_n.contiguous().clone();  // (D, B, H)
  Tensor dz_step = at::empty({s.D, s.B, s.G}, opts);
  Tensor dhh = len.defined() ? at::empty({s.D, s.B, s.R}, opts) : dh_state;
  Tensor dr = proj ? at::empty({s.D, s.B, s.P}, opts) : Tensor();
  Tensor dhpre = proj ? at::empty({s.D, s.B, s.H}, opts) : Tensor();
  const Tensor c0_c = c0.contiguous();

  GateBackwardArgs<scalar_t> a;
  a.gates = ptr<scalar_t>(gates);
  a.cells = ptr<scalar_t>(cells);
  a.c0 = ptr<scalar_t>(c0_c);
  a.peep = ptr<scalar_t>(peep);
  a.lengths = ptr<int64_t>(len);
  a.dh = proj ? ptr<scalar_t>(dhpre) : nullptr;
  a.grad_y = ptr<scalar_t>(gy);
  a.dh_state = ptr<scalar_t>(dh_state);
  a.dc_state = ptr<scalar_t>(dc_state);
  a.dz = ptr<scalar_t>(dZ);
  a.dz_step = ptr<scalar_t>(dz_step);
  a.T = s.T;
  a.B = s.B;
  a.H = s.H;
  a.D = s.D;
  // With resets: the gradients of the steps that started from (h0, c0), summed.
  const Tensor dh0_sum = resets.defined() ? at::zeros({s.D, s.B, s.R}, opts) : Tensor();
  const Tensor dc0_sum = resets.defined() ? at::zeros({s.D, s.B, s.H}, opts) : Tensor();
  a.resets = ptr<bool>(resets);
  a.dh0_sum = proj ? nullptr : ptr<scalar_t>(dh0_sum);
  a.dc0_sum = ptr<scalar_t>(dc0_sum);
  for (int64_t step = s.T - 1; step >= 0; --step) {
    if (proj) {
      launch_proj_grad_input<scalar_t>(ptr<scalar_t>(gy), ptr<scalar_t>(dh_state), a.lengths,
                                       ptr<scalar_t>(dr), ptr<scalar_t>(dR), s.T, s.B, s.P, s.D,
                                       step, a.resets, ptr<scalar_t>(dh0_sum), stream);
      at::bmm_out(dhpre, dr, *w_hr);  // (D, B, H) = (D, B, P) x (D, P, H)
    }
    a.step = step;
    launch_gate_backward<scalar_t>(a, stream);
    at::bmm_out(dhh, dz_step, w_hh);  // (D, B, R) = (D, B, G) x (D, G, R)
    // Rows padded at this step passed no gradient: their dh_state is kept.
    if (len.defined())
      launch_masked_copy<scalar_t>(ptr<scalar_t>(dhh), ptr<scalar_t>(dh_state), a.lengths, s.T, s.B,
                                   s.R, s.D, step, stream);
  }
  if (resets.defined()) {
    dh_state.add_(dh0_sum);
    dc_state.add_(dc0_sum);
  }
  grad_h0.copy_(dh_state);
  grad_c0.copy_(dc_state);
}

// Why the tensor-core backward does not take this call (refusal, "" when it does), and its plan.
template <typename scalar_t>
TcBackwardPlan tc_backward_plan(const LSTMLayerSizes& s, const at::Device& device) {
  TcBackwardPlan plan;
  if (switches().cuda_path == CudaPath::Gates) {
    plan.refusal = "the switch cuda_path is 'gates'";
  } else if constexpr (is_16bit<scalar_t>) {
    plan = plan_tc_backward_device<scalar_t>(device.index(), s.B, s.H, s.D, s.P);
  } else if constexpr (std::is_same_v<scalar_t, float>) {
    plan.refusal =
        "float32 keeps the gate-kernel path (the tensor-core kernel computes with "
        "16-bit operands; tf32 is not shown to stay within the float32 tolerance)";
  } else {
    plan.refusal = "float64 takes the gate-kernel path";
  }
  return plan;
}

// The reverse loop of every direction in one launch (lstm_tc_backward.cuh): writes dZ, grad_h0,
// grad_c0. resets: (T, B) bool or undefined (none).
template <typename scalar_t>
void backward_tc_path(const LSTMLayerSizes& s, const TcBackwardPlan& plan, const Tensor& gy,
                      const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& c0,
                      const Tensor& w_hh, const Tensor& peep, const Tensor& len,
                      const Tensor& resets, const Tensor& gates, const Tensor& cells, Tensor& dZ,
                      Tensor& grad_h0, Tensor& grad_c0, cudaStream_t stream) {
  const TcBackwardConfig cfg = kTcBackwardConfigs[plan.config];
  // Zeroed: the exchange's padding (rows past B, units past H) must read as zeros, and the
  // flags count published steps from 0.
  Tensor exchange = at::zeros({2, s.D, 16 * cfg.mt, plan.k_total}, gy.options());
  Tensor flags = at::zeros({s.D, plan.ctas}, gy.options().dtype(at::kInt));
  const Tensor w_hh_c = w_hh.contiguous(), c0_c = c0.contiguous();
  const Tensor ghn = grad_h_n.contiguous(), gcn = grad_c_n.contiguous();
  TcBackwardArgs<scalar_t> a;
  a.gates = ptr<scalar_t>(gates);
  a.cells = ptr<scalar_t>(cells);
  a.c0 = ptr<scalar_t>(c0_c);
  a.w_hh = ptr<scalar_t>(w_hh_c);
  a.peep = ptr<scalar_t>(peep);
  a.lengths = ptr<int64_t>(len);
  a.resets = ptr<bool>(resets);
  a.grad_y = ptr<scalar_t>(gy);
  a.grad_h_n = ptr<scalar_t>(ghn);
  a.grad_c_n = ptr<scalar_t>(gcn);
  a.dz = ptr<scalar_t>(dZ);
  a.grad_h0 = ptr<scalar_t>(grad_h0);
  a.grad_c0 = ptr<scalar_t>(grad_c0);
  a.dz_exchange = ptr<scalar_t>(exchange);
  a.flags = ptr<unsigned>(flags);
  a.T = s.T;
  a.B = s.B;
  a.H = s.H;
  a.D = s.D;
  a.units = plan.units;
  a.ctas = plan.ctas;
  a.k_total = plan.k_total;
  launch_tc_backward<scalar_t>(a, plan, stream);
}

// Which loop lstm_layer_backward runs for these arguments: "tensor_core", or "gates: <why the
// tensor-core backward does not take it>". Arguments as lstm_layer_cuda_path's.
std::string lstm_layer_cuda_backward_path(const Tensor& x, const Tensor& w_hh,
                                          const OptTensor& w_hr) {
  const LSTMLayerSizes s = path_query_sizes("lstm_layer_cuda_backward_path", x, w_hh, w_hr);
  std::string path;
  dispatch_storage(x, [&](auto zero) {
    using scalar_t = decltype(zero);
    const TcBackwardPlan plan = tc_backward_plan<scalar_t>(s, x.device());
    path = plan.config >= 0 ? "tensor_core" : "gates: " + plan.refusal;
  });
  return path;
}

// The kernel of lstm_layer_backward_op (lstm_layer_grads.h), which checks the arguments first.
LayerGrads lstm_layer_backward_cuda(const LSTMLayerSizes& s, const LayerBackwardInputs& in) {
  const DeviceScope scope(in.x);  // x's device current; emulated: nothing, launches in order
  const cudaStream_t stream = scope.stream();
  const Tensor len = device_lengths(in.lengths, in.x.device());
  const auto opts = in.x.options();
  const bool proj = s.P > 0;

  const Tensor gy = in.grad_y.contiguous();
  const Tensor gates_c = in.gates.contiguous(), cells_c = in.cells.contiguous();
  const Tensor peep = present(in.w_peep) ? in.w_peep->contiguous() : Tensor();
  Tensor dZ = new_output({s.T, s.B, s.D, s.G}, opts);  // gradient of the pre-activations
  Tensor dR = proj ? new_output({s.D, s.T, s.B, s.R}, opts) : Tensor();
  Tensor grad_h0 = new_output({s.D, s.B, s.R}, opts);
  Tensor grad_c0 = new_output({s.D, s.B, s.H}, opts);
  const Tensor resets_t = present(in.resets) ? *in.resets : Tensor();
  if (s.T == 0) {
    grad_h0.copy_(in.grad_h_n);
    grad_c0.copy_(in.grad_c_n);
  } else {
    dispatch_storage(in.x, [&](auto zero) {
      using scalar_t = decltype(zero);
      if constexpr (is_16bit<scalar_t>) {
        const TcBackwardPlan plan = tc_backward_plan<scalar_t>(s, in.x.device());
        if (plan.config >= 0) {
          backward_tc_path<scalar_t>(s, plan, gy, in.grad_h_n, in.grad_c_n, in.c0, in.w_hh, peep,
                                     len, resets_t, gates_c, cells_c, dZ, grad_h0, grad_c0, stream);
          return;
        }
      }
      backward_gate_path<scalar_t>(s, gy, in.grad_h_n, in.grad_c_n, in.c0, in.w_hh, in.w_hr, peep,
                                   len, resets_t, gates_c, cells_c, dZ, dR, grad_h0, grad_c0,
                                   stream);
    });
  }

  // Everything that does not feed the recurrence: one GEMM per weight over all steps.
  const Tensor dZ2 = dZ.view({s.T * s.B, s.D * s.G});
  const Tensor x2 = in.x.reshape({s.T * s.B, s.I});
  Tensor grad_x = at::mm(dZ2, in.w_ih.reshape({s.D * s.G, s.I})).view({s.T, s.B, s.I});
  Tensor grad_w_ih = at::mm(dZ2.t(), x2).view({s.D, s.G, s.I});
  Tensor grad_bias = dZ2.sum(0).view({s.D, s.G});  // CUDA sums half/bf16 in float
  Tensor grad_w_hh = at::zeros({s.D, s.G, s.R}, opts);
  Tensor grad_w_hr = proj ? at::zeros({s.D, s.P, s.H}, opts) : at::empty({0}, opts);
  Tensor grad_w_peep = present(in.w_peep) ? at::zeros({s.D, 3, s.H}, opts) : at::empty({0}, opts);
  if (s.T > 0) {
    for (int64_t d = 0; d < s.D; ++d)
      direction_weight_grads(s, d, dZ.select(2, d), proj ? dR.select(0, d) : Tensor(), in.y, in.h0,
                             in.c0, len, gates_c.select(0, d), cells_c.select(0, d),
                             grad_w_hh.select(0, d), proj ? grad_w_hr.select(0, d) : Tensor(),
                             present(in.w_peep) ? grad_w_peep.select(0, d) : Tensor(),
                             reset_before(s, d, resets_t, len));
  }
  return {grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_w_peep};
}

}  // namespace

#if defined(LSTM_FUSED_CUDA_EMULATION)
// The emulation test library's CPU kernels (its schemas: tests/cuda_emu/emu_library.cpp).
TORCH_LIBRARY_IMPL(lstm_fused_emu, CPU, m) {
  m.impl("lstm_layer_cuda_path", &lstm_layer_cuda_path);
  m.impl("lstm_layer_cuda_backward_path", &lstm_layer_cuda_backward_path);
#else
TORCH_LIBRARY_IMPL(lstm_fused, CUDA, m) {
  m.impl("lstm_layer_cuda_path", &lstm_layer_cuda_path);
  m.impl("lstm_layer_cuda_backward_path", &lstm_layer_cuda_backward_path);
#endif
  m.impl("lstm_layer_forward", &lstm_layer_forward_cuda);
  m.impl("lstm_layer_inference", &lstm_layer_inference_cuda);
  m.impl("lstm_layer_backward", &lstm_layer_backward_op<&lstm_layer_backward_cuda, kCuda>);
}

}  // namespace cuda
}  // namespace lstm_fused
