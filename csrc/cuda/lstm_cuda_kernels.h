// Launchers of the CUDA LSTM kernels, called by the host code of lstm_layer_cuda.cpp.
//
// Plain C++ with raw pointers and a stream, so the .cu files need no ATen headers (they compile
// fast and the host logic lives in one .cpp). Instantiated for float, c10::Half, c10::BFloat16;
// the gate-kernel path also for double (float64 exists for torch.autograd.gradcheck).
// Dimension letters: csrc/lstm_cell_math.h. Every pointer is to a contiguous tensor of the
// documented shape; `lengths` (B,) int64 on the device or nullptr (all steps valid).
//
// Step `step` of the forward time loop runs time t = step in direction 0 and t = T - 1 - step in
// direction 1 (csrc/lstm_layer_args.h); a row b is valid at time t when t < lengths[b].
#pragma once

#include "cuda/lstm_cuda_runtime.h"  // cudaStream_t

#include <cstddef>
#include <cstdint>

namespace lstm_fused {
namespace cuda {

// ---- Gate-kernel path (lstm_gate_kernels.cu): one fused elementwise launch per step. ----

template <typename scalar_t>
struct GateForwardArgs {
  const scalar_t* z_rec;   // (D, B, G) r_{t-1} W_hh^T of this step (no bias)
  const scalar_t* gx;      // (T, B, D, G) x W_ih^T + bias of every step
  const scalar_t* peep;    // (D, 3, H) or nullptr
  const int64_t* lengths;  // (B,) or nullptr
  scalar_t* c_state;       // (D, B, H) in: c_{t-1}, out: c_t (kept at padded steps)
  scalar_t* gates;         // (D, T, B, G) out: activated gates, zero at padded steps
  scalar_t* cells;         // (D, T, B, H) out: c_t, carried through padded steps
  scalar_t* h_out;         // (D, B, H) out at valid steps: h_state when P == 0, else h before
                           // the projection; untouched at padded steps
  scalar_t* y;             // (T, B, D*H) out, zero at padded steps; nullptr when P > 0
  int64_t T, B, H, D, step;
  // Resets (lstm_layer_args.h): (T, B) or nullptr. A row whose next step starts from its
  // initial state gets c0 as c_state (and h0 as h_out when P == 0; launch_proj_store writes
  // h0 when P > 0).
  const bool* resets;
  const scalar_t* h0;  // (D, B, H) when P == 0
  const scalar_t* c0;  // (D, B, H)
};

template <typename scalar_t>
struct GateBackwardArgs {
  const scalar_t* gates;     // (D, T, B, G) saved by the forward
  const scalar_t* cells;     // (D, T, B, H) saved by the forward
  const scalar_t* c0;        // (D, B, H)
  const scalar_t* peep;      // (D, 3, H) or nullptr
  const int64_t* lengths;    // (B,) or nullptr
  const scalar_t* dh;        // (D, B, H) gradient of h before the projection (P > 0), or
                             // nullptr: then dh = grad_y[t] + dh_state (P == 0)
  const scalar_t* grad_y;    // (T, B, D*H), read when dh == nullptr
  const scalar_t* dh_state;  // (D, B, H), read when dh == nullptr
  scalar_t* dc_state;        // (D, B, H) in: gradient of c_t, out: of c_{t-1} (kept if padded)
  scalar_t* dz;              // (T, B, D, G) out: gradient of the pre-activations
  scalar_t* dz_step;         // (D, B, G) out: the same rows of this step, packed for the GEMM
  int64_t T, B, H, D, step;
  // Resets: (T, B) or nullptr. Where the step processed before this one (t + 1 in direction
  // 0) started from the initial state, dc_state (and dh_state when dh == nullptr) is the
  // gradient of c0 (h0): added to dc0_sum (dh0_sum), and the step goes on from zero. c_{t-1}
  // is c0 where step t started from it.
  const bool* resets;
  scalar_t* dh0_sum;  // (D, B, H), used when dh == nullptr
  scalar_t* dc0_sum;  // (D, B, H)
};

template <typename scalar_t>
void launch_gate_forward(const GateForwardArgs<scalar_t>& a, cudaStream_t stream);

template <typename scalar_t>
void launch_gate_backward(const GateBackwardArgs<scalar_t>& a, cudaStream_t stream);

// With a projection: r (D, B, P) = h W_hr^T of this step. Valid rows: h_state = r, y = r;
// padded rows: y = 0, h_state kept.   h_state (D, B, P), y (T, B, D*P). resets (T, B) or
// nullptr: rows whose next step starts afresh get h0 (D, B, P) as h_state.
template <typename scalar_t>
void launch_proj_store(const scalar_t* r, scalar_t* h_state, scalar_t* y, const int64_t* lengths,
                       int64_t T, int64_t B, int64_t P, int64_t D, int64_t step, const bool* resets,
                       const scalar_t* h0, cudaStream_t stream);

// With a projection, backward: dr = grad_y[t] + dh_state on valid rows, 0 on padded rows;
// written to dr (D, B, P) and to dR[:, t] (D, T, B, P) for the W_hr gradient. resets (T, B)
// or nullptr: where the step processed before started afresh, dh_state goes to dh0_sum
// (D, B, P) instead.
template <typename scalar_t>
void launch_proj_grad_input(const scalar_t* grad_y, const scalar_t* dh_state,
                            const int64_t* lengths, scalar_t* dr, scalar_t* dR, int64_t T,
                            int64_t B, int64_t P, int64_t D, int64_t step, const bool* resets,
                            scalar_t* dh0_sum, cudaStream_t stream);

// dst = src on the rows valid at this step, dst kept elsewhere.   src, dst (D, B, N).
template <typename scalar_t>
void launch_masked_copy(const scalar_t* src, scalar_t* dst, const int64_t* lengths, int64_t T,
                        int64_t B, int64_t N, int64_t D, int64_t step, cudaStream_t stream);

}  // namespace cuda
}  // namespace lstm_fused
