// The kernel-path and debug switches of the C++ library, held in one place.
//
// The library reads no environment variable: lstm_fused/switches.py reads LSTM_FUSED_* once, at
// import, and hands the values of its C++ switches to lstm_fused._C.set_switch(name, value)
// (csrc/ops.cpp); the kernels read them through switches(). Their names and values are the
// table in csrc/switches.cpp (the same as lstm_fused/switches.py's; the enums below follow its
// order; "" = the automatic choice, the default):
//
//   poison     outputs a kernel must overwrite whole start as NaN (new_output in
//              lstm_layer_args.h), so an element it forgets fails the tests
//   cpu_loop   forces one CPU LSTM time loop (choose_loop in csrc/cpu/lstm_layer_cpu.cpp)
//   cpu_gemm   the CPU kernels multiply with ATen's matmul instead of oneDNN-packed weights
//              (csrc/cpu/reused_weight_gemm.h) or the BLAS (csrc/cpu/mhsa_cpu.cpp)
//   cuda_path  "gates": the CUDA LSTM forward and backward take the gate-kernel path even
//              where the tensor-core kernels fit (csrc/cuda/lstm_layer_cuda.cpp)
//   cpu_threads "all": the CPU kernels use torch's thread count even while the machine is
//              busy (machine_busy in csrc/cpu/parallel_time_loop.h)
//
// Setting a switch is not synchronised with kernels running in other threads: set them
// between calls (lstm_fused.switches.override in tests and benchmarks).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace lstm_fused {

enum class CpuLoop { Auto, Rows, Fused, FusedGemm, FusedInput };
enum class CpuGemm { Auto, Aten };
enum class CudaPath { Auto, Gates };
enum class CpuThreads { Auto, All };

struct Switches {
  bool poison = false;
  CpuLoop cpu_loop = CpuLoop::Auto;
  CpuGemm cpu_gemm = CpuGemm::Auto;
  CudaPath cuda_path = CudaPath::Auto;
  CpuThreads cpu_threads = CpuThreads::Auto;
};

// The values in force.
const Switches& switches();

// Sets switch `name` to `value` (exactly as written above). ValueError (c10::ValueError)
// naming the switch for an unknown name or value.
void set_switch(const std::string& name, const std::string& value);

// The value last set for `name` ("" when never set). ValueError for an unknown name.
std::string get_switch(const std::string& name);

// Every C++ switch with its allowed values ("" = automatic), in the order of the table in
// csrc/switches.cpp (lstm_fused._C.switch_table(); tests/test_switch_tables.py compares it
// with lstm_fused/switches.py).
std::vector<std::pair<std::string, std::vector<std::string>>> switch_table();

}  // namespace lstm_fused
