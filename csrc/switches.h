// The kernel-path and debug switches of the C++ library, held in one place.
//
// The library reads no environment variable: lstm_fused/switches.py reads LSTM_FUSED_* once, at
// import, and hands the values of its C++ switches to lstm_fused._C.set_switch(name, value)
// (csrc/ops.cpp); the kernels read them through switches(). Names and values are those of
// lstm_fused/switches.py ("" = the automatic choice, the default):
//
//   poison     "1" | "0" | ""                  "1": outputs a kernel must overwrite whole start
//                                              as NaN (new_output in lstm_layer_args.h), so an
//                                              element it forgets fails the tests
//   cpu_loop   "" | rows | fused | fused_gemm | fused_input
//                                              forces one CPU LSTM time loop (choose_loop in
//                                              csrc/cpu/lstm_layer_cpu.cpp)
//   cpu_gemm   "" | aten                       "aten": the CPU kernels multiply with ATen's
//                                              matmul instead of oneDNN-packed weights
//                                              (csrc/cpu/reused_weight_gemm.h) or the BLAS
//                                              (csrc/cpu/mhsa_cpu.cpp)
//   cuda_path  "" | gates                      "gates": the CUDA LSTM forward takes the
//                                              gate-kernel path even where the tensor-core
//                                              kernel fits (csrc/cuda/lstm_layer_cuda.cpp)
//
// Setting a switch is not synchronised with kernels running in other threads: set them
// between calls (lstm_fused.switches.override in tests and benchmarks).
#pragma once

#include <string>

namespace lstm_fused {

enum class CpuLoop { Auto, Rows, Fused, FusedGemm, FusedInput };
enum class CpuGemm { Auto, Aten };
enum class CudaPath { Auto, Gates };

struct Switches {
  bool poison = false;
  CpuLoop cpu_loop = CpuLoop::Auto;
  CpuGemm cpu_gemm = CpuGemm::Auto;
  CudaPath cuda_path = CudaPath::Auto;
};

// The values in force.
const Switches& switches();

// Sets switch `name` to `value` (exactly as written above). ValueError (c10::ValueError)
// naming the switch for an unknown name or value.
void set_switch(const std::string& name, const std::string& value);

// The value last set for `name` ("" when never set). ValueError for an unknown name.
std::string get_switch(const std::string& name);

}  // namespace lstm_fused
