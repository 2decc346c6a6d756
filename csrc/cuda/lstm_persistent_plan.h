// Shared-memory plan of the persistent LSTM kernels (csrc/cuda/lstm_persistent_kernels.cu):
// which block sizes (`units` hidden units of one direction per block) the host may launch and
// how much dynamic shared memory each needs. Header-only plain C++ (no CUDA, no torch), so the
// host planner (plan_persistent) and a test program (tests/test_cuda_resources.py) share it.
// plan_persistent then takes the first candidate whose blocks all fit on the device at once
// (an occupancy query); when none does, the call takes the gate-kernel path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lstm_fused {
namespace cuda {

constexpr int kPersistentThreads = 256;      // threads per block on a GPU
constexpr int kPersistentMaxBatchChunk = 32;  // batch rows per shared z tile of the forward
constexpr int kPersistentMaxUnits = 64;

inline size_t persistent_align16(size_t n) { return (n + 15) / 16 * 16; }

// Dynamic shared memory of a block: its W_hh slice (units * 4H elements), then, forward only,
// the z tile (batch_chunk * 4 * units floats).
inline size_t persistent_smem_bytes(int units, int batch_chunk, int64_t H, size_t elem_bytes,
                                    bool backward) {
  const size_t w_bytes =
      persistent_align16(static_cast<size_t>(units) * 4 * static_cast<size_t>(H) * elem_bytes);
  return backward ? w_bytes
                  : w_bytes + static_cast<size_t>(batch_chunk) * 4 * units * sizeof(float);
}

struct PersistentCandidate {
  int units = 0;
  int batch_chunk = 0;
  size_t smem = 0;     // dynamic shared memory per block, bytes
  int64_t blocks = 0;  // D * ceil(H / units)
};

// The block sizes the planner tries, in order (units 1, 2, 4, ... 64, not beyond what H
// needs), keeping only those whose shared memory fits the per-block opt-in limit.
inline std::vector<PersistentCandidate> persistent_candidates(int64_t B, int64_t H, int64_t D,
                                                              size_t elem_bytes, bool backward,
                                                              size_t smem_optin) {
  std::vector<PersistentCandidate> out;
  if (B <= 0 || H <= 0) return out;
  const int batch_chunk =
      static_cast<int>(B < kPersistentMaxBatchChunk ? B : kPersistentMaxBatchChunk);
  for (int units = 1; units <= kPersistentMaxUnits; units *= 2) {
    if (units > 1 && units / 2 >= H) break;  // larger slices change nothing
    PersistentCandidate c;
    c.units = units;
    c.batch_chunk = batch_chunk;
    c.smem = persistent_smem_bytes(units, batch_chunk, H, elem_bytes, backward);
    c.blocks = D * ((H + units - 1) / units);
    if (c.smem <= smem_optin) out.push_back(c);
  }
  return out;
}

}  // namespace cuda
}  // namespace lstm_fused
