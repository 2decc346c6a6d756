// The kernels of the operators <name>_check (csrc/op_schema.h): the argument checks of every
// operator, written once per family (lstm_layer_args.h, lstm_layer_grads.h, attentive_args.h,
// attention_args.h, mhsa_args.h) and run here for the Triton twins, so that a Triton kernel
// gets exactly the checks a C++ kernel gets; and the values of lengths where they are on the
// host, as the C++ CPU kernels check them (csrc/lengths.h). The Triton kernels run on x's device
// (CUDA, or the CPU under Triton's interpreter) in every floating dtype.
#include <torch/library.h>

#include "attention_args.h"
#include "attentive_args.h"
#include "lstm_frozen_args.h"
#include "lstm_layer_args.h"
#include "lstm_layer_grads.h"
#include "mhsa_args.h"

namespace {

using Tensor = at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

lstm_fused::LayerBackend layer_backend(const Tensor& x) {
  return {x.device().type(), "triton", /*half_types=*/true};
}

lstm_fused::KernelDevice kernel_device(const Tensor& x) { return {x.device().type(), "triton"}; }

// ------------------------------------------------------------------------------- LSTM layer

void lstm_frozen_layer_check(const Tensor& x, const Tensor& h0, const Tensor& c0,
                             const Tensor& w_ih, const Tensor& w_hh, const Tensor& bias,
                             const OptTensor& w_ih_scale, const OptTensor& w_hh_scale) {
  lstm_fused::check_frozen_args(x, h0, c0, w_ih, w_hh, bias, w_ih_scale, w_hh_scale,
                                x.device().type());
}

void lstm_layer_forward_check(const Tensor& x, const Tensor& h0, const Tensor& c0,
                              const Tensor& w_ih, const Tensor& w_hh, const OptTensor& bias,
                              const OptTensor& w_hr, const OptTensor& w_peep,
                              const OptTensor& lengths, const OptTensor& resets) {
  const auto s = lstm_fused::check_layer_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths,
                                              resets, layer_backend(x));
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused");
}

void lstm_layer_backward_check(const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n,
                               const Tensor& x, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const OptTensor& w_hr,
                               const OptTensor& w_peep, const OptTensor& lengths,
                               const OptTensor& resets, const Tensor& y, const Tensor& gates,
                               const Tensor& cells) {
  const auto s =
      lstm_fused::check_backward_args(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, w_hr,
                                      w_peep, lengths, resets, y, gates, cells, layer_backend(x));
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused");
}

void attentive_lstm_inference_check(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                    const Tensor& w_ih, const Tensor& w_hh, const OptTensor& bias,
                                    const OptTensor& w_hr, const OptTensor& w_peep,
                                    const OptTensor& lengths, const Tensor& proj_weight,
                                    const OptTensor& proj_bias, const Tensor& v,
                                    const OptTensor& qproj, int64_t chunk_size) {
  const auto s = lstm_fused::check_attentive_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep,
                                                  lengths, proj_weight, proj_bias, v, qproj,
                                                  chunk_size, layer_backend(x));
  lstm_fused::check_host_lengths(lengths, s.layer.B, s.layer.T, "lstm_fused");
}

// -------------------------------------------------------------------------------- attention

void masked_softmax_forward_check(const Tensor& scores, const OptTensor& lengths,
                                  const OptTensor& mask, double /*scale*/) {
  const auto s =
      lstm_fused::check_masked_softmax_args(scores, lengths, mask, kernel_device(scores));
  lstm_fused::check_host_lengths(lengths, s.R, s.N, "lstm_fused::masked_softmax_forward");
}

void masked_softmax_backward_check(const Tensor& grad_probs, const Tensor& probs,
                                   double /*scale*/) {
  lstm_fused::check_masked_softmax_backward_args(grad_probs, probs, kernel_device(probs));
}

void attention_pooling_forward_check(const Tensor& x, const Tensor& proj, const Tensor& v,
                                     const OptTensor& qproj, const OptTensor& lengths) {
  const auto s = lstm_fused::check_pooling_args(x, proj, v, qproj, lengths, kernel_device(x),
                                                "attention_pooling_forward");
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused::attention_pooling_forward");
}

void attention_pooling_backward_check(const Tensor& /*grad_context*/, const Tensor& /*grad_alpha*/,
                                      const Tensor& /*grad_lse*/, const Tensor& x,
                                      const Tensor& proj, const Tensor& v, const OptTensor& qproj,
                                      const OptTensor& lengths, const Tensor& /*alpha*/,
                                      const Tensor& /*context*/) {
  const auto s = lstm_fused::check_pooling_args(x, proj, v, qproj, lengths, kernel_device(x),
                                                "attention_pooling_backward");
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused::attention_pooling_backward");
}

void channel_masked_mean_forward_check(const Tensor& x, const OptTensor& lengths) {
  const auto s = lstm_fused::check_channel_args(x, Tensor(), lengths, kernel_device(x),
                                                "channel_masked_mean_forward");
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused::channel_masked_mean_forward");
}

void channel_masked_mean_backward_check(const Tensor& /*grad_mean*/, const Tensor& x,
                                        const OptTensor& lengths) {
  const auto s = lstm_fused::check_channel_args(x, Tensor(), lengths, kernel_device(x),
                                                "channel_masked_mean_backward");
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused::channel_masked_mean_backward");
}

void channel_rescale_forward_check(const Tensor& x, const Tensor& w, const OptTensor& lengths) {
  const auto s =
      lstm_fused::check_channel_args(x, w, lengths, kernel_device(x), "channel_rescale_forward");
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused::channel_rescale_forward");
}

void channel_rescale_backward_check(const Tensor& /*grad_y*/, const Tensor& x, const Tensor& w,
                                    const OptTensor& lengths) {
  const auto s =
      lstm_fused::check_channel_args(x, w, lengths, kernel_device(x), "channel_rescale_backward");
  lstm_fused::check_host_lengths(lengths, s.B, s.T, "lstm_fused::channel_rescale_backward");
}

// --------------------------------------------------------------------------- self-attention

void mhsa_forward_check(const Tensor& q, const Tensor& k, const Tensor& v, const OptTensor& lengths,
                        double /*scale*/, double dropout_p, const OptTensor& seed) {
  const auto c = lstm_fused::check_mhsa_forward_call(q, k, v, lengths, dropout_p, seed);
  lstm_fused::check_host_lengths(lengths, c.s.B, c.s.T, "lstm_fused::mhsa");
}

void mhsa_backward_check(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v,
                         const OptTensor& lengths, double /*scale*/, double dropout_p,
                         const OptTensor& seed, const Tensor& out, const Tensor& lse) {
  const auto c =
      lstm_fused::check_mhsa_backward_call(grad_out, q, k, v, lengths, dropout_p, seed, out, lse);
  lstm_fused::check_host_lengths(lengths, c.s.B, c.s.T, "lstm_fused::mhsa");
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_fused, CompositeImplicitAutograd, m) {
  m.impl("lstm_layer_forward_check", &lstm_layer_forward_check);
  m.impl("lstm_layer_inference_check", &lstm_layer_forward_check);
  m.impl("lstm_layer_backward_check", &lstm_layer_backward_check);
  m.impl("attentive_lstm_inference_check", &attentive_lstm_inference_check);
  m.impl("lstm_frozen_layer_check", &lstm_frozen_layer_check);
  m.impl("masked_softmax_forward_check", &masked_softmax_forward_check);
  m.impl("masked_softmax_backward_check", &masked_softmax_backward_check);
  m.impl("attention_pooling_forward_check", &attention_pooling_forward_check);
  m.impl("attention_pooling_backward_check", &attention_pooling_backward_check);
  m.impl("channel_masked_mean_forward_check", &channel_masked_mean_forward_check);
  m.impl("channel_masked_mean_backward_check", &channel_masked_mean_backward_check);
  m.impl("channel_rescale_forward_check", &channel_rescale_forward_check);
  m.impl("channel_rescale_backward_check", &channel_rescale_backward_check);
  m.impl("mhsa_forward_check", &mhsa_forward_check);
  m.impl("mhsa_backward_check", &mhsa_backward_check);
}
