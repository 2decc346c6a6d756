// The tensor-core forward time loop (lstm_tc_forward.cuh) for c10::Half storage.
#include "cuda/lstm_tc_forward.cuh"

namespace lstm_fused {
namespace cuda {
LSTM_FUSED_INSTANTIATE_TC_FORWARD(c10::Half)
}  // namespace cuda
}  // namespace lstm_fused
