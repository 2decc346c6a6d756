// The one reader of `lengths` for every operator family (LSTM layer, attentive LSTM, attention,
// mhsa) and every C++ kernel (CPU, CUDA, the Triton twins' <name>_check): its checks and their
// messages, one per condition, in the words of lstm_fused/_checks.py (check_lengths):
//
//   lengths has dtype torch.int32, expected torch.int64                         TypeError
//   lengths has shape (3,), expected (2,)                                       ValueError
//   lengths[1] = 9 is out of range, expected 0 <= lengths[b] <= T = 4           ValueError
//
// lengths (n,) int64 may live on any device: a kernel takes a copy on its own device. Its values
// are checked where they are read on the host (the CPU kernels: read_lengths; the Triton twins:
// check_host_lengths); on a GPU their range is the functional layer's check (one
// synchronisation per call, or a device-side assert under CUDA graph capture and
// torch.compile), and the CUDA kernels are memory-safe for any value.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <sstream>
#include <string>
#include <vector>

#include "optional_tensor.h"

namespace lstm_fused {

// (3,) or (2, 4): a shape as Python writes a tuple, as in the Python messages.
inline std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

// torch.int32: a dtype as Python writes it.
inline std::string dtype_str(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

// The values of lengths (CPU, int64, n of them) in [0, T]; throws the ValueError of the first
// one that is not.
inline void check_lengths_values(const int64_t* p, int64_t n, int64_t T, const char* where) {
  for (int64_t b = 0; b < n; ++b)
    TORCH_CHECK_VALUE(p[b] >= 0 && p[b] <= T, where, ": lengths[", b, "] = ", p[b],
                      " is out of range, expected 0 <= lengths[b] <= T = ", T);
}

// lengths (n,) int64, when present: what every family's argument checks (*_args.h) run.
inline void check_lengths(const c10::optional<at::Tensor>& lengths, int64_t n, const char* where) {
  if (!present(lengths)) return;
  TORCH_CHECK_TYPE(lengths->scalar_type() == at::kLong, where, ": lengths has dtype ",
                   dtype_str(lengths->scalar_type()), ", expected torch.int64");
  TORCH_CHECK_VALUE(lengths->dim() == 1 && lengths->size(0) == n, where, ": lengths has shape ",
                    shape_str(lengths->sizes()), ", expected (", n, ",)");
}

// The values of checked lengths in [0, T] when they are on the host (free there); lengths on a
// device are left alone (no synchronisation). The Triton twins' checks (csrc/check_ops.cpp).
inline void check_host_lengths(const c10::optional<at::Tensor>& lengths, int64_t n, int64_t T,
                               const char* where) {
  if (!present(lengths) || !lengths->device().is_cpu()) return;
  const at::Tensor l = lengths->contiguous();
  check_lengths_values(l.data_ptr<int64_t>(), n, T, where);
}

// The checked lengths read on the host, for the CPU kernels: n values (all T when absent).
inline std::vector<int64_t> read_lengths(const c10::optional<at::Tensor>& lengths, int64_t n,
                                         int64_t T, const char* where) {
  check_lengths(lengths, n, where);
  if (!present(lengths)) return std::vector<int64_t>(n, T);
  const at::Tensor l = lengths->to(at::kCPU).contiguous();
  const int64_t* p = l.data_ptr<int64_t>();
  check_lengths_values(p, n, T, where);
  return std::vector<int64_t>(p, p + n);
}

}  // namespace lstm_fused
