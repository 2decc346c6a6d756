// The operator library lstm_fused (its one TORCH_LIBRARY block: every family's schemas, from
// csrc/schemas.h) and the Python module lstm_fused._C with the functions that say and set
// which variant of the CPU kernels runs and that set the switches of csrc/switches.h. Kernels
// register per device in csrc/cpu/dispatch.cpp (CPU: one variant per instruction set, picked
// at run time) and csrc/cuda/*.cpp (TORCH_LIBRARY_IMPL); the fake (meta) kernels and the
// autograd formulas are registered from Python.
#include <Python.h>
#include <torch/library.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/parallel_time_loop.h"  // its DEFAULT variant: the busy check and its guard
#include "schemas.h"
#include "switches.h"

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

// f()'s result, or nullptr with Python's ValueError set when f throws one of the library's
// value errors (std::invalid_argument, c10::ValueError).
template <typename F>
PyObject* raising_value_errors(F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  } catch (const c10::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
  }
  return nullptr;
}

// lstm_fused._C.set_cpu_capability(name): run the variant called name from the next call on
// ("auto": the automatic choice again). ValueError for a name not built or not runnable here.
PyObject* set_cpu_capability(PyObject*, PyObject* arg) {
  const char* name = PyUnicode_AsUTF8(arg);
  if (name == nullptr) return nullptr;  // not a str: TypeError set
  return raising_value_errors([&] {
    lstm_fused::cpu::set_capability(name);
    Py_RETURN_NONE;
  });
}

// lstm_fused._C.set_switch(name: str, value: str): set a switch of csrc/switches.h (the values
// of lstm_fused/switches.py, "" = automatic). ValueError naming an unknown name or value.
PyObject* set_switch(PyObject*, PyObject* args) {
  const char* name = nullptr;
  const char* value = nullptr;
  if (!PyArg_ParseTuple(args, "ss:set_switch", &name, &value)) return nullptr;
  return raising_value_errors([&] {
    lstm_fused::set_switch(name, value);
    Py_RETURN_NONE;
  });
}

// lstm_fused._C.get_switch(name: str) -> str: the value last set ("" = automatic).
PyObject* get_switch(PyObject*, PyObject* args) {
  const char* name = nullptr;
  if (!PyArg_ParseTuple(args, "s:get_switch", &name)) return nullptr;
  return raising_value_errors(
      [&] { return PyUnicode_FromString(lstm_fused::get_switch(name).c_str()); });
}

// lstm_fused._C.switch_table() -> dict[str, tuple[str, ...]]: every C++ switch and its values
// (csrc/switches.cpp), for the test that it agrees with lstm_fused/switches.py.
PyObject* switch_table(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
  if (out == nullptr) return nullptr;
  for (const auto& [name, allowed] : lstm_fused::switch_table()) {
    PyObject* values = PyTuple_New(static_cast<Py_ssize_t>(allowed.size()));
    if (values == nullptr) {
      Py_DECREF(out);
      return nullptr;
    }
    for (size_t i = 0; i < allowed.size(); ++i) {
      PyObject* v = PyUnicode_FromString(allowed[i].c_str());
      if (v == nullptr) {
        Py_DECREF(values);
        Py_DECREF(out);
        return nullptr;
      }
      PyTuple_SET_ITEM(values, static_cast<Py_ssize_t>(i), v);
    }
    const int failed = PyDict_SetItemString(out, name.c_str(), values);
    Py_DECREF(values);
    if (failed) {
      Py_DECREF(out);
      return nullptr;
    }
  }
  return out;
}

// lstm_fused._C.one_thread_if_busy() -> (int, int) or None: where more threads are runnable
// than there are CPUs, the calling thread's parallel regions (ATen's, MKL's, the kernels') use
// one thread until one_thread_if_busy_end(the returned value); None where nothing changed.
// What lstm_fused/ops/library.py's one_thread_if_busy holds around a whole module call, so that
// the aten ops between the kernels (torch.stack of weights, ...) do not wait on the scheduler.
PyObject* one_thread_if_busy(PyObject*, PyObject*) {
  const auto saved = lstm_fused::cpu::DEFAULT::one_thread_if_busy();
  if (!saved.active) Py_RETURN_NONE;
  return Py_BuildValue("(ii)", saved.omp, saved.mkl);
}

PyObject* one_thread_if_busy_end(PyObject*, PyObject* args) {
  lstm_fused::cpu::DEFAULT::SavedThreads saved;
  if (!PyArg_ParseTuple(args, "(ii):one_thread_if_busy_end", &saved.omp, &saved.mkl))
    return nullptr;
  saved.active = true;
  lstm_fused::cpu::DEFAULT::restore_threads(saved);
  Py_RETURN_NONE;
}

PyMethodDef methods[] = {
    {"one_thread_if_busy", one_thread_if_busy, METH_NOARGS,
     "one_thread_if_busy() -> (int, int) | None: one thread for this thread's parallel regions "
     "while the machine is busy; undo with one_thread_if_busy_end(value)"},
    {"one_thread_if_busy_end", one_thread_if_busy_end, METH_VARARGS,
     "one_thread_if_busy_end(value): restore what one_thread_if_busy(), which gave value, "
     "changed"},
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "cpu_capability() -> str: the CPU kernels' variant that runs ('default', 'avx2', 'avx512')"},
    {"cpu_capabilities", cpu_capabilities, METH_NOARGS,
     "cpu_capabilities() -> tuple[str, ...]: the variants built that this CPU can run"},
    {"cpu_capabilities_built", cpu_capabilities_built, METH_NOARGS,
     "cpu_capabilities_built() -> tuple[str, ...]: every variant in this build"},
    {"set_cpu_capability", set_cpu_capability, METH_O,
     "set_cpu_capability(name): run the CPU kernels' variant name ('auto' for the automatic "
     "choice)"},
    {"set_switch", set_switch, METH_VARARGS,
     "set_switch(name, value): set a C++ switch (names and values: switch_table(); "
     "'' = automatic)"},
    {"get_switch", get_switch, METH_VARARGS,
     "get_switch(name) -> str: the value of a C++ switch ('' = automatic)"},
    {"switch_table", switch_table, METH_NOARGS,
     "switch_table() -> dict[str, tuple[str, ...]]: every C++ switch and its values"},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

extern "C" {
// `import lstm_fused._C` loads this library, which runs the static registrations below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(lstm_fused, m) { lstm_fused::define_ops(m); }
