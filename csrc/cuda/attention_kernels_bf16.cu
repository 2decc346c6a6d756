// The attention launchers (csrc/cuda/attention_kernels.cuh) for bfloat16 storage. One file per
// dtype so that the four compile in parallel.
#include "cuda/attention_kernels.cuh"

namespace lstm_fused {
namespace cuda {
LSTM_FUSED_INSTANTIATE_ATTENTION(c10::BFloat16)
}  // namespace cuda
}  // namespace lstm_fused
