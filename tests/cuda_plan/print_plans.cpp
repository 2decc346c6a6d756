// Prints, as JSON lines, the launch plans the CUDA host code makes for the shapes given on
// stdin, through the very planner headers it uses (csrc/cuda/mhsa_plan.h,
// csrc/cuda/lstm_persistent_plan.h). Built and run by tests/test_cuda_resources.py.
//   stdin lines:  mhsa <Dh> <acc_bytes> <smem_optin>
//                 persistent <B> <H> <D> <elem_bytes> <backward 0|1> <smem_optin>
#include <iostream>
#include <string>

#include "cuda/lstm_persistent_plan.h"
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
    } else if (kind == "persistent") {
      long long B, H, D;
      size_t elem, optin;
      int backward;
      std::cin >> B >> H >> D >> elem >> backward >> optin;
      std::cout << "{\"kind\": \"persistent\", \"B\": " << B << ", \"H\": " << H << ", \"D\": "
                << D << ", \"elem_bytes\": " << elem << ", \"backward\": " << backward
                << ", \"optin\": " << optin << ", \"candidates\": [";
      bool first = true;
      for (const PersistentCandidate& c :
           persistent_candidates(B, H, D, elem, backward != 0, optin)) {
        std::cout << (first ? "" : ", ") << "[" << c.units << ", " << c.smem << ", " << c.blocks
                  << "]";
        first = false;
      }
      std::cout << "]}\n";
    } else {
      std::cerr << "unknown plan kind " << kind << "\n";
      return 2;
    }
  }
  return 0;
}
