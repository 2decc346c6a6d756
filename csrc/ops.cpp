// The operator schemas of lstm_fused, defined once, and the Python module lstm_fused._C with
// the functions that say and set which variant of the CPU kernels runs. Kernels register per
// device in csrc/cpu/dispatch.cpp (CPU: one variant per instruction set, picked at run time)
// and csrc/cuda/*.cu (TORCH_LIBRARY_IMPL); the fake (meta) kernels and the autograd formulas
// are registered from Python (lstm_fused/_ops.py).
#include <Python.h>
#include <torch/library.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/dispatch.h"
#include "op_schema.h"

namespace {

// lstm_fused._C.cpu_capability() -> str: the variant of the CPU kernels that runs now
// ("default", "avx2" or "avx512"; csrc/cpu/dispatch.h says how it is chosen).
PyObject* cpu_capability(PyObject*, PyObject*) {
  return PyUnicode_FromString(
      lstm_fused::cpu::capability_name(lstm_fused::cpu::active_capability()));
}

// A tuple of the names of caps, or nullptr with the Python error set.
PyObject* names_tuple(const std::vector<lstm_fused::cpu::Capability>& caps) {
  PyObject* out = PyTuple_New(static_cast<Py_ssize_t>(caps.size()));
  if (out == nullptr) return nullptr;
  for (size_t i = 0; i < caps.size(); ++i) {
    PyObject* name = PyUnicode_FromString(lstm_fused::cpu::capability_name(caps[i]));
    if (name == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, static_cast<Py_ssize_t>(i), name);
  }
  return out;
}

// lstm_fused._C.cpu_capabilities() -> tuple of str: the variants built that this CPU can run,
// ascending (the automatic choice is the last one ATen's capability allows).
PyObject* cpu_capabilities(PyObject*, PyObject*) {
  std::vector<lstm_fused::cpu::Capability> runnable;
  for (auto c : lstm_fused::cpu::built_capabilities())
    if (lstm_fused::cpu::cpu_supports(c)) runnable.push_back(c);
  return names_tuple(runnable);
}

// lstm_fused._C.cpu_capabilities_built() -> tuple of str: every variant in this build.
PyObject* cpu_capabilities_built(PyObject*, PyObject*) {
  return names_tuple(lstm_fused::cpu::built_capabilities());
}

// lstm_fused._C.set_cpu_capability(name): run the variant called name from the next call on
// ("auto": the automatic choice again). ValueError for a name not built or not runnable here.
PyObject* set_cpu_capability(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;  // not a str: TypeError set
  try {
    lstm_fused::cpu::set_capability(name);
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "cpu_capability() -> str: the CPU kernels' variant that runs ('default', 'avx2', 'avx512')"},
    {"cpu_capabilities", cpu_capabilities, METH_NOARGS,
     "cpu_capabilities() -> tuple[str, ...]: the variants built that this CPU can run"},
    {"cpu_capabilities_built", cpu_capabilities_built, METH_NOARGS,
     "cpu_capabilities_built() -> tuple[str, ...]: every variant in this build"},
    {"set_cpu_capability", set_cpu_capability, METH_O,
     "set_cpu_capability(name): run the CPU kernels' variant name ('auto' for the automatic "
     "choice)"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
// `import lstm_fused._C` loads this library, which runs the static registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lstm_fused, m) {
  // One layer, every direction, whole sequence. Shapes: csrc/lstm_layer_args.h.
  lstm_fused::def_with_triton(
      m,
      "lstm_layer_forward(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths) "
      "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");
  // The same forward without the tensors kept for the backward (no_grad / inference).
  lstm_fused::def_with_triton(
      m,
      "lstm_layer_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths) "
      "-> (Tensor y, Tensor h_n, Tensor c_n)");
  // Gradients of lstm_layer_forward. grad_bias is (D, G) (the same for b_ih and b_hh);
  // grad_w_hr and grad_w_peep are empty tensors when w_hr / w_peep are absent.
  lstm_fused::def_with_triton(
      m,
      "lstm_layer_backward(Tensor grad_y, Tensor grad_h_n, Tensor grad_c_n, Tensor x, "
      "Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor? w_peep, "
      "Tensor? lengths, Tensor y, Tensor gates, Tensor cells) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_bias, Tensor grad_w_hr, Tensor grad_w_peep)");
  // The last layer of an attentive LSTM (SPEC §2) in inference: one direction, its outputs
  // pooled by additive attention as the loop runs (never written whole). proj_weight (A, R),
  // proj_bias (A,), v (A,), qproj (B, A) the projected query; chunk_size: steps between
  // pooling updates where the kernel keeps a ring of outputs (the CPU's).
  lstm_fused::def_with_triton(
      m,
      "attentive_lstm_inference(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
      "Tensor? bias, Tensor? w_hr, Tensor? w_peep, Tensor? lengths, Tensor proj_weight, "
      "Tensor? proj_bias, Tensor v, Tensor? qproj, int chunk_size) "
      "-> (Tensor context, Tensor alpha, Tensor lse, Tensor h_n, Tensor c_n)");
}
