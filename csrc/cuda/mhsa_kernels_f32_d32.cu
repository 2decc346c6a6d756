// The self-attention launchers (csrc/cuda/mhsa_kernels.cuh) for float32 storage and head sizes
// Dh <= 32. One file per dtype and head-size bound so that they compile in parallel.
#include "cuda/mhsa_kernels.cuh"

namespace lstm_fused {
namespace cuda {
LSTM_FUSED_INSTANTIATE_MHSA(float, 32)
}  // namespace cuda
}  // namespace lstm_fused
