// Prints, as JSON lines, the launch plans the CUDA host code makes for the shapes given on
// stdin, through the very planner headers it uses (csrc/cuda/mhsa_plan.h,
// csrc/cuda/lstm_tc_plan.h). Built and run by tests/test_cuda_resources.py.
//   stdin lines:  mhsa <Dh> <acc_bytes> <smem_optin>
//                 tc_forward <B> <H> <D> <P> <smem_optin>
//   tc_forward prints the candidates in the order the host tries them (each [config index,
//   units, warps, ksteps, mtiles, CTAs, dynamic smem]) and the reason when there are none.
#include <iostream>
#include <string>

#include "cuda/lstm_tc_plan.h"
#include "cuda/mhsa_plan.h"

using namespace lstm_fused::cuda;

int main() {
  std::string kind;
  while (std::cin >> kind) {
    if (kind == "mhsa") {
      long long Dh;
      size_t acc_bytes, optin;
      std::cin >> Dh >> acc_bytes >> optin;
      const MhsaPlan p = plan_mhsa(Dh, acc_bytes);
      const std::string why = mhsa_plan_refusal(p, Dh, optin);
      std::cout << "{\"kind\": \"mhsa\", \"Dh\": " << Dh << ", \"acc_bytes\": " << acc_bytes
                << ", \"optin\": " << optin << ", \"max_d\": " << p.max_d
                << ", \"threads\": " << p.threads << ", \"rows_per_block\": " << p.rows_per_block
                << ", \"smem\": [" << p.smem_forward << ", " << p.smem_dkdv << ", " << p.smem_dq
                << "], \"refusal\": \"" << why << "\"}\n";
    } else if (kind == "tc_forward") {
      long long B, H, D, P;
      size_t optin;
      std::cin >> B >> H >> D >> P >> optin;
      std::string reason;
      const auto cands = tc_forward_candidates(B, H, D, P, optin, &reason);
      std::cout << "{\"kind\": \"tc_forward\", \"B\": " << B << ", \"H\": " << H
                << ", \"D\": " << D << ", \"P\": " << P << ", \"optin\": " << optin
                << ", \"candidates\": [";
      bool first = true;
      for (const TcForwardCandidate& c : cands) {
        const TcForwardConfig& f = tc_forward_configs()[c.config];
        std::cout << (first ? "" : ", ") << "[" << c.config << ", " << f.units << ", "
                  << f.warps << ", " << f.ksteps << ", " << f.mtiles << ", " << c.ctas << ", "
                  << c.smem << "]";
        first = false;
      }
      std::cout << "], \"reason\": \"" << (cands.empty() ? reason : "") << "\"}\n";
    } else {
      std::cerr << "unknown plan kind " << kind << "\n";
      return 2;
    }
  }
  return 0;
}
