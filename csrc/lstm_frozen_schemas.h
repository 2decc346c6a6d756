// Operator schema of the frozen LSTM layer (docs/contract.md, "Frozen inference"), with its
// Triton twin and check operator (op_schema.h). Shapes: csrc/lstm_frozen_args.h.
#pragma once

#include <torch/library.h>

#include "op_schema.h"

namespace lstm_fused {

inline void define_lstm_frozen_ops(torch::Library& m) {
  // One direction of one layer in inference, weights packed once (float32, bfloat16, or int8
  // with per-row scales and activations quantized per row and step as the kernel runs).
  def_with_triton(m,
                  "lstm_frozen_layer(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
                  "Tensor bias, Tensor? w_ih_scale, Tensor? w_hh_scale) "
                  "-> (Tensor y, Tensor h_n, Tensor c_n)");
}

}  // namespace lstm_fused
