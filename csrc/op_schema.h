// Every operator schema of lstm_fused is written once, here in C++ (csrc/lstm_layer_schemas.h,
// csrc/attention_schemas.h). def_with_triton defines, from that one schema, three operators:
//   <name>          the C++ kernels (CPU, CUDA: TORCH_LIBRARY_IMPL in csrc/cpu, csrc/cuda)
//   <name>_triton   the same schema, for the Triton kernels that lstm_fused/ops/*.py registers
//                   with its fake kernel and autograd (the dispatcher cannot tell a Triton
//                   kernel from a CUDA C++ one by device, so the twin is an operator of its own)
//   <name>_check    the same arguments, no output: the C++ argument checks alone, which the
//                   Triton twin runs before its launcher (csrc/check_ops.cpp)
#pragma once

#include <torch/library.h>

#include <string>

namespace lstm_fused {

// schema: "name(args) -> outputs".
inline void def_with_triton(torch::Library& m, const std::string& schema) {
  m.def(schema.c_str());  // parsed here: the strings need not outlive the calls
  const auto paren = schema.find('(');
  const auto args_end = schema.rfind(") ->") + 1;  // outputs hold no "->"
  const std::string name = schema.substr(0, paren);
  m.def((name + "_triton" + schema.substr(paren)).c_str());
  m.def((name + "_check" + schema.substr(paren, args_end - paren) + " -> ()").c_str());
}

}  // namespace lstm_fused
