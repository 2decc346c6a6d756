// Attention dropout of the fused self-attention kernels: which attention weights are kept.
//
// Counter-based, so the backward regenerates the forward's mask instead of storing (B, N, T, T)
// bits: weight (row, col) of a call with seed s is kept iff
//   u = mix32(mix32(mix32(row ^ s_lo) ^ s_hi) ^ (col * 0x9E3779B9)) >> 8   (24 random bits)
//   u >= threshold,  threshold = round(p * 2^24),
// with row = (b * N + n) * T + i (query row i of head n of batch row b, modulo 2^32), col = j
// (the key), s_lo / s_hi the low / high 32 bits of the 64-bit seed, mix32 the MurmurHash3
// finaliser, all arithmetic modulo 2^32. A kept weight is scaled by 2^24 / (2^24 - threshold),
// one over the exact keep rate (1 / (1 - p) up to p's rounding to 2^-24, as F.dropout
// scales), so the dropout is unbiased; p = 1 keeps nothing. The CPU and CUDA kernels
// (csrc/cpu/mhsa_cpu.cpp, csrc/cuda/mhsa_kernels.cuh), the Triton kernels (triton_kernels/mhsa.py)
// and the reference (lstm_fused/ reference_mhsa.py, dropout_keep_mask) compute the same function,
// so every backend drops the same weights for the same seed.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define LSTM_FUSED_DROPOUT_HD __host__ __device__ __forceinline__
#else
#define LSTM_FUSED_DROPOUT_HD inline
#endif

namespace lstm_fused {

LSTM_FUSED_DROPOUT_HD uint32_t mix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  h *= 0xC2B2AE35u;
  h ^= h >> 16;
  return h;
}

struct AttentionDropout {
  uint32_t threshold = 0;   // 0: no dropout (every weight kept)
  double keep_scale = 1.0;  // 1 / the keep rate; 0 when p = 1 (nothing is kept)
  uint32_t seed_lo = 0, seed_hi = 0;

  AttentionDropout() = default;
  AttentionDropout(double p, int64_t seed)
      : threshold(static_cast<uint32_t>(std::llround(p * 16777216.0))),
        keep_scale(threshold < (1u << 24) ? 16777216.0 / (16777216.0 - threshold) : 0.0),
        seed_lo(static_cast<uint32_t>(static_cast<uint64_t>(seed))),
        seed_hi(static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32)) {}

  LSTM_FUSED_DROPOUT_HD bool active() const { return threshold > 0; }
  // The per-row part of the hash, computed once per query row.
  LSTM_FUSED_DROPOUT_HD uint32_t row_key(uint64_t row) const {
    return mix32(mix32(static_cast<uint32_t>(row) ^ seed_lo) ^ seed_hi);
  }
  LSTM_FUSED_DROPOUT_HD bool keep(uint32_t row_key, int64_t col) const {
    return (mix32(row_key ^ (static_cast<uint32_t>(col) * 0x9E3779B9u)) >> 8) >= threshold;
  }
};

}  // namespace lstm_fused
