// The operator schemas of lstm_fused, defined once. Kernels register per device in
// csrc/cpu/*.cpp and csrc/cuda/*.cu (TORCH_LIBRARY_IMPL); the fake (meta) kernels and the
// autograd formulas are registered from Python (lstm_fused/_ops.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import lstm_fused._C` loads this library, which runs the static registrations below.
PyObject* PyInit__C(void) {
#if defined(__x86_64__) && (defined(LSTM_FUSED_AVX2) || defined(LSTM_FUSED_AVX512))
  __builtin_cpu_init();
#if defined(LSTM_FUSED_AVX512)
  const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const char* isa = "AVX-512";
#else
  const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* isa = "AVX2+FMA";
#endif
  if (!ok) {
    PyErr_Format(PyExc_ImportError,
                 "lstm_fused._C was built with %s CPU kernels but this CPU lacks them; rebuild "
                 "with LSTM_FUSED_CPU_ISA=default (or avx2)", isa);
    return nullptr;
  }
#endif
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lstm_fused, m) {
  // One layer, every direction, whole sequence. Shapes: csrc/lstm_layer_args.h.
  m.def(
      "lstm_layer_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  // The same forward without the tensors kept for the backward (no_grad / inference).
  m.def(
      "lstm_layer_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths) "
      "-> (Tensor y, Tensor h_n, Tensor c_n)");
  // Gradients of lstm_layer_forward. grad_bias is (D, G) (the same for b_ih and b_hh);
  // grad_w_hr and grad_w_peep are empty tensors when w_hr / w_peep are absent.
  m.def(
      "lstm_layer_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? w_peep, "
      "Tensor? lengths, Tensor y, Tensor gates, Tensor cells) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_bias, Tensor grad_w_hr, Tensor grad_w_peep)");
  // The last layer of an attentive LSTM (SPEC §2) in inference: one direction, its outputs
  // pooled by additive attention as the loop runs (never written whole). proj_weight (A, R),
  // proj_bias (A,), v (A,), qproj (B, A) the projected query; chunk_size: steps between
  // pooling updates where the kernel keeps a ring of outputs (the CPU's).
  m.def(
      "attentive_lstm_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor proj_weight, "
      "Tensor? proj_bias, Tensor v, Tensor? qproj, int chunk_size) "
      "-> (Tensor context, Tensor alpha, Tensor lse, Tensor h_n, Tensor c_n)");
}
