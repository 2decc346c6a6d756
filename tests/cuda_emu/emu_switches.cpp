// The switches of csrc/switches.h in the emulated CUDA test library (tests/test_cuda_emulated.py),
// which has no Python module: the operator lstm_fused_emu::set_switch(name, value) sets them
// (poison, cuda_path), as lstm_fused._C.set_switch does in the library itself.
#include <torch/library.h>

#include <string>

#include "switches.h"

TORCH_LIBRARY_FRAGMENT(lstm_fused_emu, m) {
  m.def("set_switch(str name, str value) -> ()",
        [](std::string name, std::string value) { lstm_fused::set_switch(name, value); });
}
