// The launch plan of the CUDA self-attention kernels (csrc/cuda/mhsa_kernels.cuh): block shape
// and dynamic shared memory per kernel, for a head size Dh and an accumulation type of
// `acc_bytes` bytes (4: float, half, bfloat16; 8: double). Header-only plain C++ (no CUDA, no
// torch), so the host code (csrc/cuda/mhsa_cuda.cpp), the kernels and a test program
// (tests/test_cuda_resources.py) use the very same numbers.
//
// Block shape: kMhsaThreads threads; a query (or key) row is owned by `lanes` = MAX_D / 16
// consecutive threads, each holding 16 of its head dimensions (d = lane + lanes * e), so a row's
// vectors fit in registers at every head size (one thread per row would hold 4 x 128 values in
// the backward and spill); dot products are summed across the row's lanes with warp shuffles.
// Shared memory holds kMhsaKeys rows of K and V (forward, dQ) or of Q and dO plus their lse
// and delta (dK dV; and the rows' dropout hash keys), in the accumulation type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lstm_fused {
namespace cuda {

constexpr int kMhsaThreads = 128;     // threads per block
constexpr int kMhsaKeys = 32;         // rows per shared-memory tile
constexpr int kMhsaDimsPerLane = 16;  // head dimensions per thread
constexpr int64_t kMhsaMaxHeadDim = 128;

struct MhsaPlan {
  int max_d = 0;           // kernel instantiation: 32, 64 or 128 (the smallest >= Dh)
  int lanes = 0;           // threads per row
  int rows_per_block = 0;  // query (or key) rows per block
  int threads = kMhsaThreads;
  size_t smem_forward = 0, smem_dkdv = 0, smem_dq = 0;  // dynamic shared memory, bytes
  size_t smem_max() const {
    size_t m = smem_forward > smem_dkdv ? smem_forward : smem_dkdv;
    return m > smem_dq ? m : smem_dq;
  }
};

// Dh in [1, kMhsaMaxHeadDim] (larger: max_d = 0, see mhsa_plan_refusal).
inline MhsaPlan plan_mhsa(int64_t Dh, size_t acc_bytes) {
  MhsaPlan p;
  if (Dh < 1 || Dh > kMhsaMaxHeadDim) return p;
  p.max_d = Dh <= 32 ? 32 : (Dh <= 64 ? 64 : 128);
  p.lanes = p.max_d / kMhsaDimsPerLane;
  p.rows_per_block = kMhsaThreads / p.lanes;
  const size_t tile = static_cast<size_t>(kMhsaKeys) * static_cast<size_t>(Dh) * acc_bytes;
  p.smem_forward = 2 * tile;                            // K, V tiles
  p.smem_dkdv = 2 * tile + 2 * kMhsaKeys * acc_bytes +  // Q, dO tiles, lse, delta,
                kMhsaKeys * sizeof(uint32_t);           // dropout row keys
  p.smem_dq = 2 * tile;                                 // K, V tiles
  return p;
}

// Why the plan cannot run on a device whose per-block opt-in shared memory limit is
// `smem_optin` bytes; empty when it can.
inline std::string mhsa_plan_refusal(const MhsaPlan& p, int64_t Dh, size_t smem_optin) {
  if (p.max_d == 0) {
    return "head size Dh = " + std::to_string(Dh) + " is outside the CUDA kernel's range 1.." +
           std::to_string(kMhsaMaxHeadDim);
  }
  if (p.smem_max() > smem_optin) {
    return "head size Dh = " + std::to_string(Dh) + " needs " + std::to_string(p.smem_max()) +
           " bytes of shared memory per block, more than the device's opt-in limit of " +
           std::to_string(smem_optin) + " bytes";
  }
  return std::string();
}

}  // namespace cuda
}  // namespace lstm_fused
