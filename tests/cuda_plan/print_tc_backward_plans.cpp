// Prints, as JSON lines, the plans of the tensor-core backward (csrc/cuda/lstm_tc_backward_plan.h,
// the header the host uses) for the shapes given on stdin. Built and run by
// tests/test_cuda_resources_tc_backward.py.
//   stdin lines:  <B> <H> <D> <P> <elem_bytes> <sms> <smem_optin>
#include <iostream>

#include "cuda/lstm_tc_backward_plan.h"

using namespace lstm_fused::cuda;

int main() {
  long long B, H, D, P, sms;
  size_t elem, optin;
  while (std::cin >> B >> H >> D >> P >> elem >> sms >> optin) {
    const TcBackwardPlan p = plan_tc_backward(B, H, D, P, elem, sms, optin);
    const TcBackwardConfig c = p.config >= 0 ? kTcBackwardConfigs[p.config] : TcBackwardConfig{0, 0, 0};
    std::cout << "{\"B\": " << B << ", \"H\": " << H << ", \"D\": " << D << ", \"P\": " << P
              << ", \"elem_bytes\": " << elem << ", \"sms\": " << sms << ", \"optin\": " << optin
              << ", \"config\": " << p.config << ", \"warps\": " << c.warps << ", \"ksteps\": "
              << c.ksteps << ", \"mt\": " << c.mt << ", \"units\": " << p.units
              << ", \"ctas\": " << p.ctas << ", \"k_total\": " << p.k_total << ", \"smem\": "
              << p.smem << ", \"refusal\": \"" << p.refusal << "\"}\n";
  }
  return 0;
}
