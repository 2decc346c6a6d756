// Every operator schema of lstm_fused, one op family per line: the one TORCH_LIBRARY block of
// the library (csrc/ops.cpp) and that of the emulated CUDA test library
// (tests/cuda_emu/emu_library.cpp) call define_ops, so both define the very same operators.
// Each def_with_triton also defines the family's Triton twins and check operators
// (csrc/op_schema.h).
#pragma once

#include <torch/library.h>

#include "attention_schemas.h"
#include "lstm_frozen_schemas.h"
#include "lstm_layer_schemas.h"

namespace lstm_fused {

inline void define_ops(torch::Library& m) {
  define_lstm_layer_ops(m);
  define_attention_ops(m);
  define_mhsa_ops(m);
  define_lstm_frozen_ops(m);
}

}  // namespace lstm_fused
