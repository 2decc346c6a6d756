// The parts of lstm_layer_backward that are the same on every device: the operator's entry with
// the checks of its arguments (lstm_layer_backward_op), and the weight gradients that do not feed
// the recurrence (one GEMM or one reduction over all steps, after the reverse time loop). Shapes:
// lstm_layer_args.h.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#include "lstm_layer_args.h"

namespace lstm_fused {

// check_layer_args plus the gradients and the tensors saved by the forward.
inline LSTMLayerSizes check_backward_args(
    const at::Tensor& grad_y, const at::Tensor& grad_h_n, const at::Tensor& grad_c_n,
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
    const at::Tensor& w_hh, const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& w_peep, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& resets, const at::Tensor& y, const at::Tensor& gates,
    const at::Tensor& cells, const LayerBackend& backend) {
  const LSTMLayerSizes s =
      check_layer_args(x, h0, c0, w_ih, w_hh, c10::nullopt, w_hr, w_peep, lengths, resets, backend);
  check_same(grad_y, "grad_y", {s.T, s.B, s.D * s.R}, x);
  check_same(grad_h_n, "grad_h_n", {s.D, s.B, s.R}, x);
  check_same(grad_c_n, "grad_c_n", {s.D, s.B, s.H}, x);
  check_same(y, "y", {s.T, s.B, s.D * s.R}, x);
  check_same(gates, "gates", {s.D, s.T, s.B, s.G}, x);
  check_same(cells, "cells", {s.D, s.T, s.B, s.H}, x);
  return s;
}

using LayerGrads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                              at::Tensor, at::Tensor, at::Tensor>;

// The arguments of lstm_layer_backward (csrc/lstm_layer_schemas.h), checked.
struct LayerBackwardInputs {
  const at::Tensor &grad_y, &grad_h_n, &grad_c_n, &x, &h0, &c0, &w_ih, &w_hh;
  const c10::optional<at::Tensor>&w_hr, &w_peep, &lengths, &resets;
  const at::Tensor &y, &gates, &cells;
};

// The lstm_layer_backward operator of one backend from its kernel
// Backward(s, inputs) -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr,
// grad_w_peep): the C++ signature of the schema, written once, with every argument checked
// before the kernel runs.
template <auto Backward, const LayerBackend& backend>
LayerGrads lstm_layer_backward_op(const at::Tensor& grad_y, const at::Tensor& grad_h_n,
                                  const at::Tensor& grad_c_n, const at::Tensor& x,
                                  const at::Tensor& h0, const at::Tensor& c0,
                                  const at::Tensor& w_ih, const at::Tensor& w_hh,
                                  const c10::optional<at::Tensor>& w_hr,
                                  const c10::optional<at::Tensor>& w_peep,
                                  const c10::optional<at::Tensor>& lengths,
                                  const c10::optional<at::Tensor>& resets, const at::Tensor& y,
                                  const at::Tensor& gates, const at::Tensor& cells) {
  const LSTMLayerSizes s =
      check_backward_args(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr, w_peep, lengths,
                          resets, y, gates, cells, backend);
  return Backward(s, LayerBackwardInputs{grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr,
                                         w_peep, lengths, resets, y, gates, cells});
}

// Which rows of direction d start step t from the initial state (h0, c0) because of a reset,
// (T, B) bool (lstm_layer_args.h): direction 0 where resets[t, b] for 0 < t < len[b],
// direction 1 where resets[t + 1, b] for t + 1 < len[b]. Undefined without resets (resets
// undefined); len (B,) int64 or undefined. Needs T > 0.
inline at::Tensor reset_before(const LSTMLayerSizes& s, int64_t d, const at::Tensor& resets,
                               const at::Tensor& len) {
  if (!resets.defined()) return at::Tensor();
  const at::Tensor none = at::zeros({1, s.B}, resets.options());
  const at::Tensor later = resets.narrow(0, 1, s.T - 1);
  at::Tensor fresh = d == 0 ? at::cat({none, later}, 0) : at::cat({later, none}, 0);
  if (len.defined()) {
    const at::Tensor flag_t = at::arange(d, s.T + d, len.options()).unsqueeze(1);  // (T, 1)
    fresh = fresh.logical_and(flag_t < len.to(resets.device()).unsqueeze(0));
  }
  return fresh;
}

// The recurrent input r_{t-1} seen by each step of direction d, (T, B, R): h0 before the
// first step, else the previous step's output. A reverse sequence of length l starts at
// t = l - 1 from h0, where y[t + 1] holds padding zeros instead. len: (B,) int64 on y's device,
// or undefined (no padding); fresh: reset_before (h0 there too), or undefined. Needs T > 0.
inline at::Tensor previous_outputs(const LSTMLayerSizes& s, int64_t d, const at::Tensor& y,
                                   const at::Tensor& h0, const at::Tensor& len,
                                   const at::Tensor& fresh = at::Tensor()) {
  const at::Tensor y_d = y.narrow(2, d * s.R, s.R);
  const at::Tensor first = h0.select(0, d).unsqueeze(0);
  at::Tensor prev;
  if (d == 0) {
    prev = at::cat({first, y_d.narrow(0, 0, s.T - 1)}, 0);
    if (fresh.defined()) prev = at::where(fresh.unsqueeze(2), first.expand_as(prev), prev);
    return prev;
  }
  prev = at::cat({y_d.narrow(0, 1, s.T - 1), first}, 0);
  if (fresh.defined()) prev = at::where(fresh.unsqueeze(2), first.expand_as(prev), prev);
  if (len.defined()) {
    const at::Tensor next_t = at::arange(1, s.T + 1, len.options()).unsqueeze(1);  // (T, 1)
    const at::Tensor starts = (next_t >= len.unsqueeze(0)).unsqueeze(2);           // (T, B, 1)
    prev = at::where(starts, first.expand_as(prev), prev);
  }
  return prev;
}

// Gradients of W_hh, W_hr and the peepholes of direction d, written into grad_w_hh (G, R),
// grad_w_hr (P, H) and grad_w_peep (3, H) (each undefined when absent, or, for grad_w_hh, when
// the caller computes it: dz^T previous_outputs). dz: (T, B, G) gradient of
// the pre-activations; dr: (T, B, R) gradient of the projected outputs (with proj only);
// gates, cells: (T, B, G) and (T, B, H) of this direction; fresh: reset_before or undefined.
// Element-wise products are summed in float for half types (double stays double).
inline void direction_weight_grads(const LSTMLayerSizes& s, int64_t d, const at::Tensor& dz,
                                   const at::Tensor& dr, const at::Tensor& y, const at::Tensor& h0,
                                   const at::Tensor& c0, const at::Tensor& len,
                                   const at::Tensor& gates, const at::Tensor& cells,
                                   at::Tensor grad_w_hh, at::Tensor grad_w_hr,
                                   at::Tensor grad_w_peep, const at::Tensor& fresh = at::Tensor()) {
  const int64_t TB = s.T * s.B, H = s.H;
  const auto dtype = dz.scalar_type();
  const auto acc = dtype == at::kDouble ? at::kDouble : at::kFloat;
  if (grad_w_hh.defined()) {
    const at::Tensor r_prev = previous_outputs(s, d, y, h0, len, fresh);
    at::mm_out(grad_w_hh, dz.reshape({TB, s.G}).t(), r_prev.reshape({TB, s.R}));
  }
  const at::Tensor cells_acc = cells.to(acc);
  if (grad_w_hr.defined()) {
    const at::Tensor h_pre = (gates.narrow(2, 3 * H, H).to(acc) * at::tanh(cells_acc)).to(dtype);
    at::mm_out(grad_w_hr, dr.reshape({TB, s.R}).t(), h_pre.reshape({TB, H}));
  }
  if (grad_w_peep.defined()) {
    const at::Tensor c0_d = c0.select(0, d).unsqueeze(0).to(acc);
    at::Tensor c_prev = d == 0 ? at::cat({c0_d, cells_acc.narrow(0, 0, s.T - 1)}, 0)
                               : at::cat({cells_acc.narrow(0, 1, s.T - 1), c0_d}, 0);
    if (fresh.defined()) c_prev = at::where(fresh.unsqueeze(2), c0_d.expand_as(c_prev), c_prev);
    const at::Tensor dz_acc = dz.to(acc);
    const int64_t steps_rows[] = {0, 1};  // not .sum({0, 1}): ambiguous with torch 2.11
    grad_w_peep.select(0, 0).copy_((dz_acc.narrow(2, 0, H) * c_prev).sum(steps_rows));
    grad_w_peep.select(0, 1).copy_((dz_acc.narrow(2, H, H) * c_prev).sum(steps_rows));
    grad_w_peep.select(0, 2).copy_((dz_acc.narrow(2, 3 * H, H) * cells_acc).sum(steps_rows));
  }
}

}  // namespace lstm_fused
