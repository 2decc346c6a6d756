// The switches of csrc/switches.h: their values, and set_switch / get_switch.
#include "switches.h"

#include <c10/util/Exception.h>

#include <array>
#include <c10/util/StringUtil.h>

namespace lstm_fused {
namespace {

Switches values;

// The C++ switches and their values: the one C++ table (lstm_fused/switches.py holds the same
// names and values; tests/test_switch_tables.py checks it). The allowed values of each switch
// are in the order of its enum in switches.h (poison: off, off, on), so that the index of a
// value is its enum value.
struct Switch {
  const char* name;
  std::array<const char*, 5> allowed;  // nullptr-terminated when shorter; "" = automatic
  std::string current;
};

std::array<Switch, 5> table{{
    {"poison", {"", "0", "1", nullptr, nullptr}, ""},
    {"cpu_loop", {"", "rows", "fused", "fused_gemm", "fused_input"}, ""},
    {"cpu_gemm", {"", "aten", nullptr, nullptr, nullptr}, ""},
    {"cuda_path", {"", "gates", nullptr, nullptr, nullptr}, ""},
    {"cpu_threads", {"", "all", nullptr, nullptr, nullptr}, ""},
}};

Switch& find(const std::string& name) {
  std::string names;
  for (Switch& s : table) {
    if (name == s.name) return s;
    names += std::string(names.empty() ? "" : ", ") + s.name;
  }
  C10_THROW_ERROR(ValueError, c10::str("lstm_fused: no C++ switch named '", name,
                                       "'; the C++ switches are ", names));
}

// Index of value among the allowed values of s (ValueError naming both when it is not one).
size_t index_of(const Switch& s, const std::string& value) {
  std::string expected;
  for (size_t i = 0; i < s.allowed.size() && s.allowed[i] != nullptr; ++i) {
    if (value == s.allowed[i]) return i;
    if (*s.allowed[i] != '\0')
      expected += std::string(expected.empty() ? "'" : ", '") + s.allowed[i] + "'";
  }
  C10_THROW_ERROR(ValueError,
                  c10::str("lstm_fused: '", value, "' is not a value of the switch ", s.name,
                           "; expected one of ", expected, " or '' (automatic)"));
}

}  // namespace

const Switches& switches() { return values; }

void set_switch(const std::string& name, const std::string& value) {
  Switch& s = find(name);
  const size_t i = index_of(s, value);
  if (name == "poison") values.poison = i == 2;
  else if (name == "cpu_loop") values.cpu_loop = static_cast<CpuLoop>(i);
  else if (name == "cpu_gemm") values.cpu_gemm = static_cast<CpuGemm>(i);
  else if (name == "cuda_path") values.cuda_path = static_cast<CudaPath>(i);
  else values.cpu_threads = static_cast<CpuThreads>(i);
  s.current = value;
}

std::string get_switch(const std::string& name) { return find(name).current; }

std::vector<std::pair<std::string, std::vector<std::string>>> switch_table() {
  std::vector<std::pair<std::string, std::vector<std::string>>> out;
  for (const Switch& s : table) {
    std::vector<std::string> allowed;
    for (const char* v : s.allowed)
      if (v != nullptr) allowed.emplace_back(v);
    out.emplace_back(s.name, allowed);
  }
  return out;
}

}  // namespace lstm_fused
