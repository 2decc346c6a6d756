// Every operator schema of lstm_fused is written once, here in C++ (csrc/ops.cpp,
// csrc/attention_schemas.h). An operator that also has a Triton implementation gets a twin of
// the same schema named `<name>_triton`; lstm_fused/ops/*.py registers its Python kernels,
// fake kernel and autograd (the dispatcher cannot tell a Triton kernel from a CUDA C++ one by
// device, so the twin is a separate operator).
#pragma once

#include <torch/library.h>

#include <string>

namespace lstm_fused {

// schema: "name(args) -> outputs". Defines `name` and `name_triton` with the same signature.
inline void def_with_triton(torch::Library& m, const std::string& schema) {
  m.def(schema.c_str());  // parsed here: the string need not outlive the call
  const auto paren = schema.find('(');
  const std::string twin = schema.substr(0, paren) + "_triton" + schema.substr(paren);
  m.def(twin.c_str());
}

}  // namespace lstm_fused
