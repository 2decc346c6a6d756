// Whether an optional tensor argument of an op was given (c10::optional holding a defined
// tensor): shared by the CPU and CUDA kernels and the argument checks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace lstm_fused {

inline bool present(const c10::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

}  // namespace lstm_fused
