// The CPU kernels as the dispatcher sees them: one registration per op, which calls the variant
// of the kernel (csrc/cpu/capability.h) that active_capability() names. Built without ISA flags,
// like every source outside the kernel sources: it runs on any CPU.
//
// Which variants exist comes from setup.py (LSTM_FUSED_CPU_VARIANT_AVX2 / _AVX512); whether the
// CPU runs one is asked of the CPU itself (__builtin_cpu_supports, for exactly the extensions
// setup.py compiles that variant with) and capped by ATen's own choice, at::get_cpu_capability(),
// so ATEN_CPU_CAPABILITY=default|avx2 lowers lstm_fused's kernels with ATen's.
#include "cpu/dispatch.h"

#include <ATen/Version.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <utility>

#include "cpu/kernels.h"

namespace lstm_fused {
namespace cpu {
namespace {

constexpr Capability kAll[] = {Capability::Default, Capability::Avx2, Capability::Avx512};

bool built(Capability c) {
  switch (c) {
    case Capability::Default:
      return true;
    case Capability::Avx2:
#if defined(LSTM_FUSED_CPU_VARIANT_AVX2)
      return true;
#else
      return false;
#endif
    case Capability::Avx512:
#if defined(LSTM_FUSED_CPU_VARIANT_AVX512)
      return true;
#else
      return false;
#endif
  }
  return false;
}

// ATen's capability as one of ours (at::get_cpu_capability() says "DEFAULT", "NO AVX",
// "AVX2", "AVX512", or a name of another architecture, which has only our default).
Capability aten_capability() {
  const std::string name = at::get_cpu_capability();
  if (name == "AVX512") return Capability::Avx512;
  if (name == "AVX2") return Capability::Avx2;
  return Capability::Default;
}

constexpr int kAutomatic = -1;
std::atomic<int> chosen{kAutomatic};  // set_capability's choice, or kAutomatic

// The kernel table `Table` of variant c (one specialisation per line of LSTM_FUSED_CPU_TABLES).
template <typename Table>
const Table& table(Capability c);
#if defined(LSTM_FUSED_CPU_VARIANT_AVX512)
#define LSTM_FUSED_CASE_AVX512(variable) \
  case Capability::Avx512:               \
    return AVX512::variable;
#else
#define LSTM_FUSED_CASE_AVX512(variable)
#endif
#if defined(LSTM_FUSED_CPU_VARIANT_AVX2)
#define LSTM_FUSED_CASE_AVX2(variable) \
  case Capability::Avx2:               \
    return AVX2::variable;
#else
#define LSTM_FUSED_CASE_AVX2(variable)
#endif
#define LSTM_FUSED_TABLE_OF(Table, variable) \
  template <>                                \
  const Table& table<Table>(Capability c) {  \
    switch (c) {                             \
      LSTM_FUSED_CASE_AVX512(variable)       \
      LSTM_FUSED_CASE_AVX2(variable)         \
      default:                               \
        return DEFAULT::variable;            \
    }                                        \
  }
LSTM_FUSED_CPU_TABLES(LSTM_FUSED_TABLE_OF)
#undef LSTM_FUSED_TABLE_OF
#undef LSTM_FUSED_CASE_AVX2
#undef LSTM_FUSED_CASE_AVX512

// Dispatched<&Table::op>::call has the signature of the kernel and forwards to the active
// variant's entry. The choice is read at every call (one relaxed atomic load).
template <auto Entry>
struct Dispatched;
template <typename Table, typename R, typename... Args, R (*Table::*Entry)(Args...)>
struct Dispatched<Entry> {
  static R call(Args... args) {
    return (table<Table>(active_capability()).*Entry)(std::forward<Args>(args)...);
  }
};

}  // namespace

const char* capability_name(Capability c) {
  switch (c) {
    case Capability::Avx512:
      return "avx512";
    case Capability::Avx2:
      return "avx2";
    default:
      return "default";
  }
}

std::vector<Capability> built_capabilities() {
  std::vector<Capability> out;
  for (Capability c : kAll)
    if (built(c)) out.push_back(c);
  return out;
}

bool cpu_supports(Capability c) {
  switch (c) {
    case Capability::Default:
      return true;
#if defined(__x86_64__) || defined(__i386__)
    // The extensions setup.py's _CPU_VARIANTS compiles each variant with.
    case Capability::Avx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Capability::Avx512:
      __builtin_cpu_init();
      return cpu_supports(Capability::Avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
#endif
    default:
      return false;
  }
}

Capability automatic_capability() {
  // Computed once: at::get_cpu_capability() reads ATEN_CPU_CAPABILITY once too.
  static const Capability best = [] {
    const Capability cap = aten_capability();
    Capability pick = Capability::Default;
    for (Capability c : kAll)
      if (built(c) && cpu_supports(c) && c <= cap) pick = c;
    return pick;
  }();
  return best;
}

Capability active_capability() {
  const int c = chosen.load(std::memory_order_relaxed);
  return c == kAutomatic ? automatic_capability() : static_cast<Capability>(c);
}

void set_capability(const std::string& name) {
  if (name == "auto") {
    chosen.store(kAutomatic, std::memory_order_relaxed);
    return;
  }
  for (Capability c : kAll) {
    if (name != capability_name(c)) continue;
    if (!built(c))
      throw std::invalid_argument("the " + name +
                                  " CPU kernels are not in this build of "
                                  "lstm_fused (LSTM_FUSED_CPU_ISA limited them)");
    if (!cpu_supports(c))
      throw std::invalid_argument("this CPU lacks the instructions of the " + name +
                                  " CPU kernels");
    chosen.store(static_cast<int>(c), std::memory_order_relaxed);
    return;
  }
  throw std::invalid_argument(
      "CPU capability must be 'auto', 'default', 'avx2' or 'avx512', "
      "got '" +
      name + "'");
}

#define LSTM_FUSED_CPU_IMPL(Table, op) m.impl(#op, &Dispatched<&Table::op>::call);

// Every operator of LSTM_FUSED_CPU_OPS (csrc/cpu/kernels.h).
TORCH_LIBRARY_IMPL(lstm_fused, CPU, m) { LSTM_FUSED_CPU_OPS(LSTM_FUSED_CPU_IMPL) }

#undef LSTM_FUSED_CPU_IMPL

}  // namespace cpu
}  // namespace lstm_fused
