// Launch plan of the sm_90 thread-block-cluster backward time loop
// (csrc/cuda/lstm_tc_backward_cluster.cuh): which compiled configuration runs a shape, with how
// many clusters of how many CTAs, or why none does. Header-only plain C++ (no CUDA, no torch).
//
// Work split (2-D): per direction, P clusters (unit groups) of C CTAs (row groups). CTA (p, q)
// (cluster p, rank q) owns the `units` (UC) hidden units j = p * C * UC + q * UC + u, u < UC,
// i.e. its cluster owns UP = C * UC consecutive units. It holds W_hh[rows of row group q, the
// UP units of its cluster] in registers as mma.sync B fragments (NT n8 tiles, UP <= 8 NT) and
// per step reads only row group q of the dz rows of the step before: the 4 UC dz values of the
// rank-q CTA of every cluster, P * 4 UC <= WARPS * KSTEPS * 16 (the K capacity; the warps
// split it). Exchange positions: q * Kq + p * 4 UC + gate * UC + u, Kq = WARPS * KSTEPS * 16,
// so row group q's producers are exactly the rank-q CTAs, one in every cluster.
//   constraints: D * P * C CTAs resident at once (one per SM; the host checks the cluster
//   occupancy on the device), shared memory <= the opt-in limit, C <= 8 (portable clusters).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lstm_fused {
namespace cuda {

struct TcClusterConfig {
  int cluster;  // CTAs per cluster (C, row groups)
  int warps;    // warps per CTA
  int ksteps;   // k16 steps per warp
  int nt;       // n8 tiles per CTA (UP <= 8 nt units of its cluster)
  int mt;       // m16 tiles of batch rows
};

#if defined(LSTM_FUSED_CUDA_EMULATION)
// Tiny grids for the CPU emulation: clusters of 2, 2 warps, 2 n8 tiles (at most 8 units per
// CTA), K capacity 64 or 96; one or two m16 tiles.
constexpr TcClusterConfig kTcClusterConfigs[] = {{2, 2, 2, 2, 1}, {2, 2, 3, 2, 1}, {2, 2, 2, 2, 2}};
#else
// The headline (H = 768): clusters of 8, UC = 6, UP = 48 (NT = 6), P = 16 clusters,
// K = 16 * 24 = 384 = 8 warps x 3 k-steps: 36 weight registers a thread. (8, 8, 4, 8, 4)
// spills on sm_90 (ptxas: 255 registers + 148 bytes of spill stores), so it is not compiled.
constexpr TcClusterConfig kTcClusterConfigs[] = {{8, 8, 3, 6, 1}, {8, 8, 4, 8, 1}, {8, 8, 3, 6, 4}};
#endif
constexpr int kTcClusterConfigCount =
    static_cast<int>(sizeof(kTcClusterConfigs) / sizeof(kTcClusterConfigs[0]));

// Row pitch of a warp's staged dz slice (16-bit elements): 8 more than the slice (ldmatrix
// rows in distinct bank groups).
constexpr int tc_cluster_pitch(int ksteps) { return ksteps * 16 + 8; }

// Dynamic shared memory: staged dz slices (warps x 16 x pitch, 16-bit), the warps' partial dh
// (warps x 16 mt x 8 nt floats), the CTA's partial dh, double-buffered for the cluster's reads
// (2 x 16 mt x 8 nt floats).
constexpr size_t tc_cluster_smem_bytes(const TcClusterConfig& c) {
  return static_cast<size_t>(c.warps) * 16 * tc_cluster_pitch(c.ksteps) * 2 +
         static_cast<size_t>(c.warps + 2) * 16 * c.mt * 8 * c.nt * sizeof(float);
}

struct TcClusterPlan {
  int config = -1;      // index into kTcClusterConfigs, -1: does not fit (see refusal)
  int cluster = 0;      // C
  int units = 0;        // hidden units per CTA (UC)
  int clusters = 0;     // P, clusters per direction
  int ctas = 0;         // CTAs per direction, P * C
  int k_total = 0;      // K extent of the exchange rows: C * warps * ksteps * 16
  size_t smem = 0;      // dynamic shared memory per CTA, bytes
  std::string refusal;  // why no configuration fits ("" when one does)
};

// The plan for B rows, H units, D directions, projection size P_proj, elem_bytes per storage
// element, on a device with `sms` SMs and `smem_optin` bytes of opt-in shared memory per block.
inline TcClusterPlan plan_tc_backward_cluster(int64_t B, int64_t H, int64_t D, int64_t P_proj,
                                              size_t elem_bytes, int64_t sms, size_t smem_optin) {
  TcClusterPlan plan;
  if (elem_bytes != 2) {
    plan.refusal = "the tensor-core backward runs bfloat16 and float16 only";
    return plan;
  }
  if (P_proj > 0) {
    plan.refusal =
        "proj_size > 0: the projected state needs all H units of a step before the "
        "next, a second exchange per step the cluster backward does not have";
    return plan;
  }
  if (B <= 0 || H <= 0) {
    plan.refusal = "an empty batch or hidden size";
    return plan;
  }
  int64_t max_rows = 0;
  for (int i = 0; i < kTcClusterConfigCount; ++i)
    if (16 * kTcClusterConfigs[i].mt > max_rows) max_rows = 16 * kTcClusterConfigs[i].mt;
  if (B > max_rows) {
    plan.refusal = "batch " + std::to_string(B) + " > " + std::to_string(max_rows) +
                   " rows, the most the cluster backward stages per step";
    return plan;
  }
  std::string why;
  for (int i = 0; i < kTcClusterConfigCount; ++i) {
    const TcClusterConfig& c = kTcClusterConfigs[i];
    const int64_t C = c.cluster, uc_max = 8 * c.nt / C;
    const int64_t P = (H + C * uc_max - 1) / (C * uc_max);
    const int64_t uc = (H + P * C - 1) / (P * C);  // same cluster count, fewest padded units
    const int64_t kq = static_cast<int64_t>(c.warps) * c.ksteps * 16;
    if (B > 16 * c.mt) continue;
    if (4 * uc * P > kq) {
      why = "4H = " + std::to_string(4 * H) + " weight rows exceed the register capacity";
      continue;
    }
    if (D * P * C > sms) {
      why = "needs " + std::to_string(D * P * C) + " CTAs (one per SM) but the device has " +
            std::to_string(sms) + " SMs";
      continue;
    }
    const size_t smem = tc_cluster_smem_bytes(c);
    if (smem > smem_optin) {
      why = "needs " + std::to_string(smem) +
            " bytes of shared memory per CTA, more than the "
            "opt-in limit of " +
            std::to_string(smem_optin);
      continue;
    }
    plan.config = i;
    plan.cluster = c.cluster;
    plan.units = static_cast<int>(uc);
    plan.clusters = static_cast<int>(P);
    plan.ctas = static_cast<int>(P * C);
    plan.k_total = static_cast<int>(C * kq);
    plan.smem = smem;
    return plan;
  }
  plan.refusal = "no cluster configuration fits: " + why;
  return plan;
}

}  // namespace cuda
}  // namespace lstm_fused
