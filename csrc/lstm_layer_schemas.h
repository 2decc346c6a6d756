// Operator schemas of the LSTM layer family (docs/contract.md, sections 1 and 2), written once,
// each with its Triton twin (op_schema.h):
// csrc/ops.cpp defines them in the library lstm_fused, and the CUDA emulation test library
// (csrc/cuda/*.cpp built with -DLSTM_FUSED_CUDA_EMULATION, namespace lstm_fused_emu) in its
// own, so that both declare the very same operators. Shapes: csrc/lstm_layer_args.h.
#pragma once

#include <torch/library.h>

#include "op_schema.h"

namespace lstm_fused {

inline void define_lstm_layer_ops(torch::Library& m) {
  // One layer, every direction, whole sequence. resets (T, B) bool, optional: where set, the
  // row's state is replaced by its initial state at that step boundary (lstm_layer_args.h).
  def_with_triton(
      m,
      "lstm_layer_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor? resets=None) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  // The same forward without the tensors kept for the backward (no_grad / inference).
  def_with_triton(
      m,
      "lstm_layer_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor? resets=None) "
      "-> (Tensor y, Tensor h_n, Tensor c_n)");
  // Gradients of lstm_layer_forward. grad_bias is (D, G) (the same for b_ih and b_hh);
  // grad_w_hr and grad_w_peep are empty tensors when w_hr / w_peep are absent.
  def_with_triton(
      m,
      "lstm_layer_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? w_peep, "
      "Tensor? lengths, Tensor? resets, Tensor y, Tensor gates, Tensor cells) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_bias, Tensor grad_w_hr, Tensor grad_w_peep)");
  // The last layer of an attentive LSTM (docs/contract.md, section 2) in inference: one
  // direction, its outputs pooled by additive attention as the loop runs (never written
  // whole). proj_weight (A, R), proj_bias (A,), v (A,), qproj (B, A) the projected query;
  // chunk_size: steps between pooling updates where the kernel keeps a ring of outputs (the
  // CPU's).
  def_with_triton(
      m,
      "attentive_lstm_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor proj_weight, "
      "Tensor? proj_bias, Tensor v, Tensor? qproj, int chunk_size) "
      "-> (Tensor context, Tensor alpha, Tensor lse, Tensor h_n, Tensor c_n)");
}

}  // namespace lstm_fused
