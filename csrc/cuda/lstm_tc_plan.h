// Plan of the tensor-core forward time loop (csrc/cuda/lstm_tc_forward.cuh): which compiled
// configurations exist, which shapes they take, their shared memory, and why a call does not
// fit (the reason the host reports; the call then takes the gate-kernel path). Header-only
// plain C++ (no CUDA, no torch), shared by the host planner (plan_tc_forward in
// lstm_tc_forward.cuh), the host code (lstm_layer_cuda.cpp) and the resource test's planner
// program (tests/cuda_plan/print_plans.cpp).
//
// A configuration (kUnits, kWarps, kKSteps, kMTiles): each CTA owns kUnits hidden units of one
// direction (all 4 gates: N = 4 * kUnits gate columns, ceil(N / 8) n8-tiles), runs kWarps warps
// of which warp w multiplies the K-slice [16 kKSteps w, 16 kKSteps (w + 1)) of h_{t-1}, and
// takes up to 16 kMTiles batch rows (M). It serves H <= 16 kKSteps kWarps, H % 8 == 0,
// B <= 16 kMTiles, with D * ceil(H / kUnits) CTAs that must all be resident at once (one per
// SM: cooperative launch).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lstm_fused {
namespace cuda {

struct TcForwardConfig {
  int units, warps, ksteps, mtiles;
};

// X(kUnits, kWarps, kKSteps, kMTiles) for every compiled configuration, in the order the
// planner tries them (smallest M first, then fewest units per CTA, i.e. the most CTAs).
#if defined(LSTM_FUSED_CUDA_EMULATION)
// Tiny grids for the CPU emulation (every CUDA thread is an OS thread): H <= 32, B <= 32.
#define LSTM_FUSED_TC_FORWARD_CONFIGS(X) X(4, 2, 1, 1) X(4, 2, 1, 2)
#else
// H <= 768 with 6 units (128 CTAs at H = 768, D = 1) or 12 (D = 2), H <= 1024 with 8;
// B <= 16, 32, 64.
#define LSTM_FUSED_TC_FORWARD_CONFIGS(X) \
  X(6, 8, 6, 1)                          \
  X(8, 8, 8, 1)                          \
  X(12, 8, 6, 1) X(6, 8, 6, 2) X(8, 8, 8, 2) X(12, 8, 6, 2) X(6, 8, 6, 4) X(8, 8, 8, 4)
#endif

#define LSTM_FUSED_TC_CONFIG_ENTRY(U, W, K, M) TcForwardConfig{U, W, K, M},
inline const std::vector<TcForwardConfig>& tc_forward_configs() {
  static const std::vector<TcForwardConfig> configs{
      LSTM_FUSED_TC_FORWARD_CONFIGS(LSTM_FUSED_TC_CONFIG_ENTRY)};
  return configs;
}
#undef LSTM_FUSED_TC_CONFIG_ENTRY

// Flags of the exchange: one unsigned per CTA, kTcFlagStride apart (a 128-byte line each).
constexpr int kTcFlagStride = 32;

constexpr size_t tc_align16(size_t n) { return (n + 15) / 16 * 16; }

// Shared memory of one CTA, bytes: h_{t-1} as (16 kMTiles, K + 8) 16-bit values (the row pitch
// padded by 16 bytes so that the 8 rows one ldmatrix reads fall in distinct banks), then the
// split-K partial sums (kWarps, 16 kMTiles, 8 ntiles) floats.
inline size_t tc_forward_smem_bytes(const TcForwardConfig& c) {
  const size_t m = 16 * static_cast<size_t>(c.mtiles);
  const size_t k = 16 * static_cast<size_t>(c.ksteps) * c.warps;
  const size_t ntiles = (4 * static_cast<size_t>(c.units) + 7) / 8;
  return tc_align16(m * (k + 8) * 2) + static_cast<size_t>(c.warps) * m * ntiles * 8 * 4;
}

inline int64_t tc_forward_ctas(const TcForwardConfig& c, int64_t H, int64_t D) {
  return D * ((H + c.units - 1) / c.units);
}

struct TcForwardCandidate {
  int config = -1;  // index into tc_forward_configs()
  int64_t ctas = 0;
  size_t smem = 0;
};

// The configurations that can take (B, H, D, P) with 16-bit storage (elem_bytes = 2) within
// the per-block shared-memory limit, in the order to try, or an empty list and `reason` says
// why none can (float32 and float64 are the caller's reason: see lstm_layer_cuda.cpp).
inline std::vector<TcForwardCandidate> tc_forward_candidates(int64_t B, int64_t H, int64_t D,
                                                             int64_t P, size_t smem_optin,
                                                             std::string* reason) {
  std::vector<TcForwardCandidate> out;
  const auto& configs = tc_forward_configs();
  int64_t max_h = 0, max_b = 0;
  for (const auto& c : configs) {
    max_h = std::max<int64_t>(max_h, 16 * c.ksteps * c.warps);
    max_b = std::max<int64_t>(max_b, 16 * c.mtiles);
  }
  if (P > 0) {
    *reason =
        "proj_size > 0: the projected h needs every hidden unit of a step before the "
        "next step can start, which the tensor-core kernel's exchange does not provide";
    return out;
  }
  if (B <= 0 || H <= 0) {
    *reason = "an empty batch or hidden size";
    return out;
  }
  if (H % 8 != 0) {
    *reason = "hidden_size H = " + std::to_string(H) +
              " is not a multiple of 8 (h is exchanged in 16-byte pieces)";
    return out;
  }
  if (H > max_h) {
    *reason = "hidden_size H = " + std::to_string(H) +
              " is above the largest compiled "
              "configuration (H <= " +
              std::to_string(max_h) + ")";
    return out;
  }
  if (B > max_b) {
    *reason = "batch B = " + std::to_string(B) +
              " is above the largest compiled "
              "configuration (B <= " +
              std::to_string(max_b) + ")";
    return out;
  }
  size_t least_smem = 0;
  for (size_t i = 0; i < configs.size(); ++i) {
    const TcForwardConfig& c = configs[i];
    if (H > 16 * c.ksteps * c.warps || B > 16 * c.mtiles) continue;
    // The smallest M that takes B only: a larger one multiplies padding.
    if (c.mtiles > 1 && B <= 16 * (c.mtiles / 2)) continue;
    TcForwardCandidate cand{static_cast<int>(i), tc_forward_ctas(c, H, D),
                            tc_forward_smem_bytes(c)};
    if (least_smem == 0 || cand.smem < least_smem) least_smem = cand.smem;
    if (cand.smem <= smem_optin) out.push_back(cand);
  }
  if (out.empty())
    *reason = "the configurations for B = " + std::to_string(B) + ", H = " + std::to_string(H) +
              " need at least " + std::to_string(least_smem) +
              " bytes of shared memory per "
              "CTA, above the device's per-block limit of " +
              std::to_string(smem_optin);
  return out;
}

}  // namespace cuda
}  // namespace lstm_fused
