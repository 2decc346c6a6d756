// The one TORCH_LIBRARY block of the emulated CUDA test library (tests/test_cuda_emulated.py):
// every operator schema of lstm_fused (csrc/schemas.h) in the namespace lstm_fused_emu, whose
// CPU kernels are the CUDA host code of csrc/cuda/*.cpp built with -DLSTM_FUSED_CUDA_EMULATION;
// and, as the library has no Python module, the operator set_switch(name, value) that sets the
// switches of csrc/switches.h (poison, cuda_path) as lstm_fused._C.set_switch does.
#include <torch/library.h>

#include <string>

#include "schemas.h"
#include "switches.h"

TORCH_LIBRARY(lstm_fused_emu, m) {
  lstm_fused::define_ops(m);
  m.def("set_switch(str name, str value) -> ()",
        [](std::string name, std::string value) { lstm_fused::set_switch(name, value); });
}
