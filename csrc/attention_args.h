// Shapes and checks of the attention operators (masked softmax, attention pooling, channel
// attention; schemas and layouts: csrc/attention_schemas.h), shared by the CPU kernels
// (csrc/cpu/attention_cpu.cpp) and the CUDA host code (csrc/cuda/attention_cuda.cpp).
//
// These checks are the cheap ones (shapes, dtypes, devices) and guard direct calls of the
// operators; the Python entry points (lstm_fused.functional) check user input first, with the
// messages of docs/contract.md. lengths: csrc/lengths.h (its values are checked where they are
// read on the host; the CUDA kernels clamp them into range where they read them).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <string>

#include "lengths.h"
#include "optional_tensor.h"

namespace lstm_fused {

// The device a backend's kernels take their inputs on, and the backend's name for messages.
struct KernelDevice {
  at::DeviceType type;
  const char* backend;  // "cpu", "cuda", "emulated cuda"
};

inline void check_device(const at::Tensor& t, const KernelDevice& dev, const char* op,
                         const char* name) {
  TORCH_CHECK(t.device().type() == dev.type, "lstm_fused::", op, " (", dev.backend,
              " backend): ", name, " is on ", t.device(), ", expected a ",
              at::DeviceTypeName(dev.type), " tensor");
}

inline void check_dim(const at::Tensor& t, int64_t dim, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.dim() == dim, "lstm_fused::", op, ": ", name, " must be ", dim,
                    "-D, got shape ", t.sizes());
}

inline void check_dtype(const at::Tensor& t, const at::Tensor& x, const char* op,
                        const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "lstm_fused::", op, ": ", name,
                   " has dtype ", t.scalar_type(), ", expected x's dtype ", x.scalar_type());
}

// lengths (n,) int64, when present (csrc/lengths.h).
inline void check_attention_lengths(const c10::optional<at::Tensor>& lengths, int64_t n,
                                    const char* op) {
  check_lengths(lengths, n, (std::string("lstm_fused::") + op).c_str());
}

// The inner dimension with stride 1 (outer strides stay free, so a (T, B, D) view transposed
// to (B, T, D) is read in place).
inline at::Tensor inner_contiguous(const at::Tensor& t) {
  return t.stride(-1) == 1 ? t : t.contiguous();
}

// ---------------------------------------------------------------------------- masked softmax

struct SoftmaxSizes {
  int64_t R, N;  // rows, columns of the flattened softmax
};

// scores (R, N); lengths (R,); mask (R, N) bool.
inline SoftmaxSizes check_masked_softmax_args(const at::Tensor& scores,
                                              const c10::optional<at::Tensor>& lengths,
                                              const c10::optional<at::Tensor>& mask,
                                              const KernelDevice& dev) {
  const char* op = "masked_softmax_forward";
  check_device(scores, dev, op, "scores");
  check_dim(scores, 2, op, "scores");
  const SoftmaxSizes s{scores.size(0), scores.size(1)};
  check_attention_lengths(lengths, s.R, op);
  if (present(mask)) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "lstm_fused::", op,
                     ": mask must be bool, got ", mask->scalar_type());
    TORCH_CHECK_VALUE(mask->sizes() == scores.sizes(), "lstm_fused::", op, ": mask has shape ",
                      mask->sizes(), ", expected ", scores.sizes());
  }
  return s;
}

// grad_probs and probs (R, N).
inline SoftmaxSizes check_masked_softmax_backward_args(const at::Tensor& grad_probs,
                                                       const at::Tensor& probs,
                                                       const KernelDevice& dev) {
  const char* op = "masked_softmax_backward";
  check_device(probs, dev, op, "probs");
  check_dim(probs, 2, op, "probs");
  TORCH_CHECK_VALUE(grad_probs.sizes() == probs.sizes(), "lstm_fused::", op,
                    ": grad_probs has shape ", grad_probs.sizes(), ", expected ", probs.sizes());
  return {probs.size(0), probs.size(1)};
}

// ------------------------------------------------------------------------- attention pooling

struct PoolingSizes {
  int64_t B, T, D, A;
};

// x (B, T, D), proj (B, T, A), v (A,), qproj (B, A), lengths (B,).
inline PoolingSizes check_pooling_args(const at::Tensor& x, const at::Tensor& proj,
                                       const at::Tensor& v, const c10::optional<at::Tensor>& qproj,
                                       const c10::optional<at::Tensor>& lengths,
                                       const KernelDevice& dev, const char* op) {
  check_device(x, dev, op, "x");
  check_dim(x, 3, op, "x");
  check_dim(proj, 3, op, "proj");
  const PoolingSizes s{x.size(0), x.size(1), x.size(2), proj.size(2)};
  TORCH_CHECK_VALUE(proj.size(0) == s.B && proj.size(1) == s.T, "lstm_fused::", op,
                    ": proj has shape ", proj.sizes(), ", expected (", s.B, ", ", s.T, ", A)");
  TORCH_CHECK_VALUE(v.dim() == 1 && v.size(0) == s.A, "lstm_fused::", op, ": v has shape ",
                    v.sizes(), ", expected (", s.A, ",)");
  check_dtype(proj, x, op, "proj");
  check_dtype(v, x, op, "v");
  if (present(qproj)) {
    TORCH_CHECK_VALUE(qproj->dim() == 2 && qproj->size(0) == s.B && qproj->size(1) == s.A,
                      "lstm_fused::", op, ": qproj has shape ", qproj->sizes(), ", expected (", s.B,
                      ", ", s.A, ")");
    check_dtype(*qproj, x, op, "qproj");
  }
  check_attention_lengths(lengths, s.B, op);
  return s;
}

// The checked inputs of a pooling call as the kernels read them: x and proj with their inner
// dimension contiguous (outer strides free), v and qproj contiguous (qproj undefined when
// absent).
struct PoolingInputs {
  PoolingSizes s;
  at::Tensor x, proj, v, qproj;
};

inline PoolingInputs pooling_inputs(const at::Tensor& x, const at::Tensor& proj,
                                    const at::Tensor& v, const c10::optional<at::Tensor>& qproj,
                                    const c10::optional<at::Tensor>& lengths,
                                    const KernelDevice& dev, const char* op) {
  PoolingInputs in;
  in.s = check_pooling_args(x, proj, v, qproj, lengths, dev, op);
  in.x = inner_contiguous(x);
  in.proj = inner_contiguous(proj);
  in.v = v.contiguous();
  if (present(qproj)) in.qproj = qproj->contiguous();
  return in;
}

// ------------------------------------------------------------------------- channel attention

struct ChannelSizes {
  int64_t B, T, C;
};

// x (B, T, C), lengths (B,); w (B, C) for the rescale (undefined for the masked mean).
inline ChannelSizes check_channel_args(const at::Tensor& x, const at::Tensor& w,
                                       const c10::optional<at::Tensor>& lengths,
                                       const KernelDevice& dev, const char* op) {
  check_device(x, dev, op, "x");
  check_dim(x, 3, op, "x");
  const ChannelSizes s{x.size(0), x.size(1), x.size(2)};
  if (w.defined()) {
    TORCH_CHECK_VALUE(w.dim() == 2 && w.size(0) == s.B && w.size(1) == s.C, "lstm_fused::", op,
                      ": w has shape ", w.sizes(), ", expected (", s.B, ", ", s.C, ")");
    check_dtype(w, x, op, "w");
  }
  check_attention_lengths(lengths, s.B, op);
  return s;
}

}  // namespace lstm_fused
