// Launch plan of the tensor-core backward time loop (csrc/cuda/lstm_tc_backward.cuh): which
// compiled configuration runs a shape, with how many CTAs and how much shared memory, or why
// none does (the host then takes the gate-kernel path and reports the reason). Header-only
// plain C++ (no CUDA, no torch): the host (lstm_layer_cuda.cpp), the kernel file and a test
// program (tests/test_cuda_resources_tc_backward.py) share it.
//
// Work split (1-D, column ownership): CTA c of direction d owns `units` consecutive hidden
// units [c * units, (c + 1) * units) and holds the columns W_hh[:, j] of those units in
// registers, as mma.sync B fragments. Per step it needs every dz row of the step before, K =
// 4H values per batch row, which the warps split into WARPS equal K slices of KSTEPS * 16.
//   compiled configurations: (KSTEPS, MT) with WARPS warps per CTA and one n8 tile (at most 8
//   units per CTA); MT m16 tiles of batch rows (B <= 16 * MT), staged in shared memory one
//   tile at a time (tiles past B skipped).
//   constraints: D * ctas <= SMs (every CTA resident at once: one CTA per SM), 4 * units * ctas
//   <= WARPS * KSTEPS * 16 (K capacity of the registers), shared memory <= the opt-in limit.
// Configurations are tried in order (fewest weight registers first); the first that fits wins.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lstm_fused {
namespace cuda {

struct TcBackwardConfig {
  int warps;   // warps per CTA
  int ksteps;  // k16 steps per warp (weight registers per thread: 2 * ksteps)
  int mt;      // m16 tiles of batch rows
};

#if defined(LSTM_FUSED_CUDA_EMULATION)
// Tiny grids for the CPU emulation (one OS thread per CUDA thread): 2 warps, at most 3 units
// per CTA (so the n8 tile is partly padding and the last CTA of H = 8 owns 2 units), K slices
// of 48 that do not line up with the producers' 12-value blocks.
constexpr TcBackwardConfig kTcBackwardConfigs[] = {{2, 3, 1}, {2, 3, 3}, {2, 6, 1}};
constexpr int kTcBackwardMaxUnits = 3;
#else
constexpr TcBackwardConfig kTcBackwardConfigs[] = {{8, 8, 1}, {8, 16, 1}, {8, 24, 1}, {8, 32, 1},
                                                   {8, 8, 4}, {8, 16, 4}, {8, 24, 4}, {8, 32, 4}};
constexpr int kTcBackwardMaxUnits = 8;  // one n8 tile
#endif
constexpr int kTcBackwardConfigCount =
    static_cast<int>(sizeof(kTcBackwardConfigs) / sizeof(kTcBackwardConfigs[0]));

// Row pitch of a warp's staged dz slice in shared memory, in 16-bit elements: 8 more than the
// slice, so that the 8 rows one ldmatrix phase reads start in 8 different 16-byte bank groups.
constexpr int tc_backward_pitch(int ksteps) { return ksteps * 16 + 8; }

// Dynamic shared memory of a CTA: the staged dz slices (warps x 16 rows x pitch, 16-bit), then
// the split-K partials (warps x 16 mt x 8 floats).
constexpr size_t tc_backward_smem_bytes(const TcBackwardConfig& c) {
  return static_cast<size_t>(c.warps) * 16 * tc_backward_pitch(c.ksteps) * 2 +
         static_cast<size_t>(c.warps) * 16 * c.mt * 8 * sizeof(float);
}

struct TcBackwardPlan {
  int config = -1;      // index into kTcBackwardConfigs, -1: does not fit (see refusal)
  int units = 0;        // hidden units per CTA
  int ctas = 0;         // CTAs per direction, ceil(H / units)
  int k_total = 0;      // K extent of the exchange rows: warps * ksteps * 16
  size_t smem = 0;      // dynamic shared memory per CTA, bytes
  std::string refusal;  // why no configuration fits ("" when one does)
};

// The plan for B rows, H units, D directions, projection size P, elem_bytes per storage
// element, on a device with `sms` SMs and `smem_optin` bytes of opt-in shared memory per block.
inline TcBackwardPlan plan_tc_backward(int64_t B, int64_t H, int64_t D, int64_t P,
                                       size_t elem_bytes, int64_t sms, size_t smem_optin) {
  TcBackwardPlan plan;
  if (elem_bytes != 2) {
    plan.refusal = "the tensor-core backward runs bfloat16 and float16 only";
    return plan;
  }
  if (P > 0) {
    plan.refusal =
        "proj_size > 0: the projected state needs all H units of a step before the "
        "next, a second exchange per step the tensor-core backward does not have";
    return plan;
  }
  if (B <= 0 || H <= 0) {
    plan.refusal = "an empty batch or hidden size";
    return plan;
  }
  const int64_t units = H < kTcBackwardMaxUnits ? H : kTcBackwardMaxUnits;
  const int64_t ctas = (H + units - 1) / units;
  const int64_t balanced = (H + ctas - 1) / ctas;  // same CTA count, fewest padded units
  if (D * ctas > sms) {
    plan.refusal = "needs " + std::to_string(D * ctas) + " CTAs (" +
                   std::to_string(kTcBackwardMaxUnits) +
                   " hidden units each, one per SM) but "
                   "the device has " +
                   std::to_string(sms) + " SMs";
    return plan;
  }
  int64_t max_rows = 0;
  size_t min_smem = 0;
  for (int i = 0; i < kTcBackwardConfigCount; ++i) {
    const TcBackwardConfig& c = kTcBackwardConfigs[i];
    const int64_t k_cap = static_cast<int64_t>(c.warps) * c.ksteps * 16;
    if (16 * c.mt > max_rows) max_rows = 16 * c.mt;
    if (B > 16 * c.mt || 4 * balanced * ctas > k_cap) continue;
    const size_t smem = tc_backward_smem_bytes(c);
    if (smem > smem_optin) {
      if (min_smem == 0 || smem < min_smem) min_smem = smem;
      continue;
    }
    plan.config = i;
    plan.units = static_cast<int>(balanced);
    plan.ctas = static_cast<int>(ctas);
    plan.k_total = static_cast<int>(k_cap);
    plan.smem = smem;
    return plan;
  }
  if (B > max_rows)
    plan.refusal = "batch " + std::to_string(B) + " > " + std::to_string(max_rows) +
                   " rows, the most the tensor-core backward stages per step";
  else if (min_smem > 0)
    plan.refusal = "needs " + std::to_string(min_smem) +
                   " bytes of shared memory per CTA, more "
                   "than the device's opt-in limit of " +
                   std::to_string(smem_optin) + " bytes";
  else
    plan.refusal = "4H = " + std::to_string(4 * H) +
                   " weight rows per CTA exceed the register "
                   "capacity of every compiled configuration";
  return plan;
}

}  // namespace cuda
}  // namespace lstm_fused
