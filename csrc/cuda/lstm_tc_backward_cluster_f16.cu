// The sm_90 cluster backward loop (lstm_tc_backward_cluster.cuh) for float16 storage.
#include "cuda/lstm_tc_backward_cluster.cuh"

namespace lstm_fused {
namespace cuda {
LSTM_FUSED_INSTANTIATE_TC_BACKWARD_CLUSTER(c10::Half)
}  // namespace cuda
}  // namespace lstm_fused
