// The argument checks of the LSTM operators as operators of their own, so that the Triton
// implementations (lstm_fused/ops/lstm_layer.py) run exactly the checks the C++ kernels run
// (the Triton backend: any floating dtype, on x's device),
// written once (lstm_layer_args.h, lstm_layer_grads.h, attentive_args.h). Each returns the
// sizes it checked: [T, B, I, H, P, R, G, D] (attentive_lstm_check: then A).
#include <torch/library.h>

#include <vector>

#include "attentive_args.h"
#include "lstm_layer_args.h"
#include "lstm_layer_grads.h"

namespace {

using lstm_fused::LSTMLayerSizes;
using Tensor = at::Tensor;
using OptTensor = c10::optional<at::Tensor>;

std::vector<int64_t> sizes_of(const LSTMLayerSizes& s) {
  return {s.T, s.B, s.I, s.H, s.P, s.R, s.G, s.D};
}

// The Triton kernels run on x's device (CUDA, or the CPU under Triton's interpreter) in every
// floating dtype.
lstm_fused::LayerBackend triton_backend(const Tensor& x) {
  return {x.device().type(), "triton", /*half_types=*/true};
}

std::vector<int64_t> lstm_layer_check(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                      const Tensor& w_ih, const Tensor& w_hh,
                                      const OptTensor& bias, const OptTensor& w_hr,
                                      const OptTensor& w_peep, const OptTensor& lengths) {
  return sizes_of(lstm_fused::check_layer_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep,
                                               lengths, triton_backend(x)));
}

std::vector<int64_t> lstm_layer_backward_check(
    const Tensor& grad_y, const Tensor& grad_h_n, const Tensor& grad_c_n, const Tensor& x,
    const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& w_hr, const OptTensor& w_peep, const OptTensor& lengths, const Tensor& y,
    const Tensor& gates, const Tensor& cells) {
  return sizes_of(lstm_fused::check_backward_args(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih,
                                                  w_hh, w_hr, w_peep, lengths, y, gates, cells,
                                                  triton_backend(x)));
}

std::vector<int64_t> attentive_lstm_check(
    const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const OptTensor& w_hr, const OptTensor& w_peep,
    const OptTensor& lengths, const Tensor& proj_weight, const OptTensor& proj_bias,
    const Tensor& v, const OptTensor& qproj, int64_t chunk_size) {
  const auto s = lstm_fused::check_attentive_args(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep,
                                                  lengths, proj_weight, proj_bias, v, qproj,
                                                  chunk_size, triton_backend(x));
  std::vector<int64_t> out = sizes_of(s.layer);
  out.push_back(s.A);
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_fused, m) {
  m.def("lstm_layer_check(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
        "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths) -> int[]",
        &lstm_layer_check);
  m.def("lstm_layer_backward_check(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
        "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? w_peep, "
        "Tensor? lengths, Tensor y, Tensor gates, Tensor cells) -> int[]",
        &lstm_layer_backward_check);
  m.def("attentive_lstm_check(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
        "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor proj_weight, "
        "Tensor? proj_bias, Tensor v, Tensor? qproj, int chunk_size) -> int[]",
        &attentive_lstm_check);
}
