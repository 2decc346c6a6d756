// The tensor-core backward loop (lstm_tc_backward.cuh) for bfloat16 storage.
#include "cuda/lstm_tc_backward.cuh"

namespace lstm_fused {
namespace cuda {
LSTM_FUSED_INSTANTIATE_TC_BACKWARD(c10::BFloat16)
}  // namespace cuda
}  // namespace lstm_fused
