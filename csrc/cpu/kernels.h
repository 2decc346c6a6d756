// The entry points of the CPU kernels, one table per op family, defined once per CPU capability
// (csrc/cpu/capability.h) by the kernel sources and read by the dispatch (csrc/cpu/dispatch.cpp).
// Shapes and semantics: the schemas (csrc/ops.cpp, csrc/attention_schemas.h).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <tuple>

namespace lstm_fused {
namespace cpu {

using Tensor = at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

// Written by csrc/cpu/lstm_layer_cpu.cpp.
struct LstmLayerKernels {
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> (*lstm_layer_forward)(
      const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
      const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep,
      const OptTensor& lengths, const OptTensor& resets);
  std::tuple<Tensor, Tensor, Tensor> (*lstm_layer_inference)(
      const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
      const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep,
      const OptTensor& lengths, const OptTensor& resets);
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> (*lstm_layer_backward)(
      const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& x,
      const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
      const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths,
      const OptTensor& resets, const Tensor& y, const Tensor& gates, const Tensor& cells);
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> (*attentive_lstm_inference)(
      const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
      const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep,
      const OptTensor& lengths, const Tensor& proj_weight, const OptTensor& proj_bias,
      const Tensor& v, const OptTensor& qproj, int64_t chunk_size);
};

// Written by csrc/cpu/attention_cpu.cpp.
struct AttentionKernels {
  Tensor (*masked_softmax_forward)(const Tensor& scores, const OptTensor& lengths,
                                   const OptTensor& mask, double scale);
  Tensor (*masked_softmax_backward)(const Tensor& grad, const Tensor& probs, double scale);
  std::tuple<Tensor, Tensor, Tensor> (*attention_pooling_forward)(const Tensor& x,
                                                                  const Tensor& proj,
                                                                  const Tensor& v,
                                                                  const OptTensor& qproj,
                                                                  const OptTensor& lengths);
  std::tuple<Tensor, Tensor, Tensor, Tensor> (*attention_pooling_backward)(
      const Tensor& grad_context, const Tensor& grad_alpha, const Tensor& grad_lse, const Tensor& x,
      const Tensor& proj, const Tensor& v, const OptTensor& qproj, const OptTensor& lengths,
      const Tensor& alpha, const Tensor& context);
  Tensor (*channel_masked_mean_forward)(const Tensor& x, const OptTensor& lengths);
  Tensor (*channel_masked_mean_backward)(const Tensor& grad_mean, const Tensor& x,
                                         const OptTensor& lengths);
  Tensor (*channel_rescale_forward)(const Tensor& x, const Tensor& w, const OptTensor& lengths);
  std::tuple<Tensor, Tensor> (*channel_rescale_backward)(const Tensor& grad_y, const Tensor& x,
                                                         const Tensor& w, const OptTensor& lengths);
};

// Written by csrc/cpu/mhsa_cpu.cpp.
struct MhsaKernels {
  std::tuple<Tensor, Tensor> (*mhsa_forward)(const Tensor& q, const Tensor& k, const Tensor& v,
                                             const OptTensor& lengths, double scale,
                                             double dropout_p, const OptTensor& seed);
  std::tuple<Tensor, Tensor, Tensor> (*mhsa_backward)(const Tensor& grad_out, const Tensor& q,
                                                      const Tensor& k, const Tensor& v,
                                                      const OptTensor& lengths, double scale,
                                                      double dropout_p, const OptTensor& seed,
                                                      const Tensor& out, const Tensor& lse);
};

// Written by csrc/cpu/lstm_frozen_cpu.cpp.
struct LstmFrozenKernels {
  std::tuple<Tensor, Tensor, Tensor> (*lstm_frozen_layer)(const Tensor& x, const Tensor& h0,
                                                          const Tensor& c0, const Tensor& w_ih,
                                                          const Tensor& w_hh, const Tensor& bias,
                                                          const OptTensor& w_ih_scale,
                                                          const OptTensor& w_hh_scale);
};

// THE LIST: every table with the variable each kernel source defines it as, and every operator
// with its table. The declarations below and the CPU registrations (csrc/cpu/dispatch.cpp) are
// derived from it; a new op family adds its struct above and its lines here.
#define LSTM_FUSED_CPU_TABLES(X)          \
  X(LstmLayerKernels, lstm_layer_kernels) \
  X(AttentionKernels, attention_kernels)  \
  X(MhsaKernels, mhsa_kernels)            \
  X(LstmFrozenKernels, lstm_frozen_kernels)
#define LSTM_FUSED_CPU_OPS(X)                       \
  X(LstmLayerKernels, lstm_layer_forward)           \
  X(LstmLayerKernels, lstm_layer_inference)         \
  X(LstmLayerKernels, lstm_layer_backward)          \
  X(LstmLayerKernels, attentive_lstm_inference)     \
  X(AttentionKernels, masked_softmax_forward)       \
  X(AttentionKernels, masked_softmax_backward)      \
  X(AttentionKernels, attention_pooling_forward)    \
  X(AttentionKernels, attention_pooling_backward)   \
  X(AttentionKernels, channel_masked_mean_forward)  \
  X(AttentionKernels, channel_masked_mean_backward) \
  X(AttentionKernels, channel_rescale_forward)      \
  X(AttentionKernels, channel_rescale_backward)     \
  X(MhsaKernels, mhsa_forward)                      \
  X(MhsaKernels, mhsa_backward)                     \
  X(LstmFrozenKernels, lstm_frozen_layer)

// One set of tables per capability. Each is a constant (function addresses only), so it is
// initialised statically: no code of a variant runs before the dispatch picks it.
#define LSTM_FUSED_DECLARE_CPU_TABLE(Table, variable) extern const Table variable;
#define LSTM_FUSED_DECLARE_CPU_KERNELS(capability)    \
  namespace capability {                              \
  LSTM_FUSED_CPU_TABLES(LSTM_FUSED_DECLARE_CPU_TABLE) \
  }
LSTM_FUSED_DECLARE_CPU_KERNELS(DEFAULT)
LSTM_FUSED_DECLARE_CPU_KERNELS(AVX2)
LSTM_FUSED_DECLARE_CPU_KERNELS(AVX512)
#undef LSTM_FUSED_DECLARE_CPU_KERNELS
#undef LSTM_FUSED_DECLARE_CPU_TABLE

}  // namespace cpu
}  // namespace lstm_fused
