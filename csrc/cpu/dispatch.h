// Which variant of the CPU kernels runs (csrc/cpu/capability.h): chosen at the first call from
// what was built, what the CPU has and the cap ATen applies (ATEN_CPU_CAPABILITY), or set by
// name. csrc/cpu/dispatch.cpp; exposed to Python by csrc/ops.cpp (lstm_fused._C).
#pragma once

#include <string>
#include <vector>

namespace lstm_fused {
namespace cpu {

// Ordered: each one's instructions include those of the ones before it.
enum class Capability { Default = 0, Avx2 = 1, Avx512 = 2 };

// "default", "avx2", "avx512".
const char* capability_name(Capability c);

// The variants this build of the library contains (LSTM_FUSED_CPU_ISA limits them), ascending.
std::vector<Capability> built_capabilities();

// Whether this CPU has every instruction set extension the variant was compiled for.
bool cpu_supports(Capability c);

// The best built variant the CPU supports, no higher than at::get_cpu_capability() (which
// honours ATEN_CPU_CAPABILITY=default|avx2|avx512).
Capability automatic_capability();

// The variant the kernels run now: automatic_capability() unless set_capability chose one.
Capability active_capability();

// Runs the variant called name ("default", "avx2", "avx512"), or the automatic choice for
// "auto", from the next call on. Throws std::invalid_argument when name is none of these, is
// not built or the CPU lacks its instructions.
void set_capability(const std::string& name);

}  // namespace cpu
}  // namespace lstm_fused
