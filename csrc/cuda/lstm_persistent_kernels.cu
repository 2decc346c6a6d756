// Persistent path of the CUDA LSTM: the whole time loop of one layer (both directions) in one
// cooperative launch. Shapes: lstm_cuda_kernels.h; letters: csrc/lstm_cell_math.h.
//
// Work split. Block k owns `units` consecutive hidden units [u0, u0 + units) of direction d and
// keeps the W_hh rows (forward) or columns (backward) of those units in shared memory for the
// whole loop, so W_hh is read from global memory once per launch instead of once per step.
//   forward step:  z[b, q*H + j] = h_{t-1}[b, :] . W_hh[q*H + j, :] for its units (one warp per
//                  dot product, lanes split the H terms), then the cell math of its units;
//                  h_t of its units goes to a global exchange buffer, then a grid barrier.
//   backward step: dh_rec[b, j] = dz_{t+1}[b, :] . W_hh[:, j] for its units (the dz of the step
//                  done before, from a global exchange buffer), then the cell backward of its
//                  units, whose dz rows go to the exchange buffer, then a grid barrier.
// The exchange buffers are double-buffered by step parity: step s reads buffer s % 2 and writes
// (s + 1) % 2; the barrier at the end of step s orders every read of step s before any write of
// step s + 1 to the same buffer. Exchange buffers are read with ld.global.cg (L2, not L1): L1 is
// not coherent across SMs, and a line cached two steps ago would be stale.
//
// Exchanged and carried values are rounded to the storage type before they are stored as float,
// so the numbers are those of the gate-kernel path (which keeps its state in the storage type).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "cuda/lstm_cuda_kernels.h"
#include "cuda/lstm_cuda_runtime.h"
#include "cuda/lstm_persistent_plan.h"
#include "lstm_cell_math.h"

namespace lstm_fused {
namespace cuda {
namespace {

namespace cg = cooperative_groups;

#if defined(LSTM_FUSED_CUDA_EMULATION)
constexpr int kThreads = 64;       // every emulated CUDA thread is an OS thread
constexpr int kMaxBatchChunk = 2;  // several batch chunks even on the tiny test batches
constexpr int kEmulatedUnits = 3;  // blocks of 3 units: the last block of H = 8 owns 2
#else
constexpr int kThreads = kPersistentThreads;  // batch chunks: lstm_persistent_plan.h
#endif
constexpr int kWarps = kThreads / 32;

template <typename scalar_t>
__device__ __forceinline__ float round_to(float v) {
  return static_cast<float>(static_cast<scalar_t>(v));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Whether step t (0 <= t < T) of row b is valid. Any lengths[b] is memory-safe here (below 0
// acts as 0, above T as T); 0 <= lengths[b] <= T is the caller's contract, checked on the host
// by lstm_fused.functional (not in the host code: that would be a device synchronisation).
__device__ __forceinline__ bool row_valid(const int64_t* lengths, int64_t b, int64_t t) {
  return lengths == nullptr || t < lengths[b];
}

// Dynamic shared memory: w_s (units * G scalar_t) then, forward only, z_s (batch_chunk * 4 *
// units floats). Both kernels take the plan's `units` and `batch_chunk` as arguments.
// Launch bounds (kThreads, 1): without the "one block per SM is enough" hint, ptxas for sm_80
// capped the registers for a higher occupancy and spilled (12 bytes; tests/test_cuda_resources.py).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_forward_kernel(PersistentForwardArgs<scalar_t> a, int units, int batch_chunk) {
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  const int64_t H = a.H, G = 4 * H, B = a.B, T = a.T, D = a.D;
  const int64_t U = units, blocks_per_dir = (H + U - 1) / U;
  const int64_t d = blockIdx.x / blocks_per_dir;
  const int64_t u0 = (blockIdx.x % blocks_per_dir) * U;
  const int64_t nu = min(U, H - u0);  // units of this block (the last block may own fewer)
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem_raw);  // (4 * U, H): row q*U+uu = gate q, unit uu
  float* z_s = reinterpret_cast<float*>(smem_raw + ((U * G * sizeof(scalar_t) + 15) / 16) * 16);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  cg::grid_group grid = cg::this_grid();

  const scalar_t* w_d = a.w_hh + d * G * H;
  for (int64_t e = threadIdx.x; e < 4 * nu * H; e += blockDim.x) {
    const int64_t row = e / H, k = e % H;  // row = q * nu + uu
    const int64_t q = row / nu, uu = row % nu;
    w_s[(q * U + uu) * H + k] = w_d[(q * H + u0 + uu) * H + k];
  }
  float* h_x = a.h_exchange;  // (2, D, B, H)
  for (int64_t e = threadIdx.x; e < B * nu; e += blockDim.x) {
    const int64_t b = e / nu, j = u0 + e % nu;
    const int64_t s_idx = (d * B + b) * H + j;
    h_x[s_idx] = static_cast<float>(a.h0[s_idx]);
    a.c_state[s_idx] = static_cast<float>(a.c0[s_idx]);
  }
  __syncthreads();
  grid.sync();

  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = d == 0 ? step : T - 1 - step;
    const float* h_in = h_x + (step % 2) * D * B * H + d * B * H;        // (B, H)
    float* h_out = h_x + ((step + 1) % 2) * D * B * H + d * B * H;       // (B, H)
    for (int64_t b0 = 0; b0 < B; b0 += batch_chunk) {
      const int64_t nb = min(static_cast<int64_t>(batch_chunk), B - b0);
      // Recurrent product of the block's rows, one warp per (b, row).
      for (int64_t o = warp; o < nb * 4 * nu; o += kWarps) {
        const int64_t bb = o / (4 * nu), row = o % (4 * nu);
        const int64_t q = row / nu, uu = row % nu;
        const scalar_t* w_row = w_s + (q * U + uu) * H;
        const float* h_row = h_in + (b0 + bb) * H;
        float acc = 0.0f;
        for (int64_t k = lane; k < H; k += 32)
          acc += static_cast<float>(w_row[k]) * __ldcg(h_row + k);
        acc = warp_sum(acc);
        if (lane == 0) z_s[bb * 4 * U + q * U + uu] = acc;
      }
      __syncthreads();
      // Cell math of the block's units.
      for (int64_t e = threadIdx.x; e < nb * nu; e += blockDim.x) {
        const int64_t bb = e / nu, uu = e % nu, b = b0 + bb, j = u0 + uu;
        const int64_t s_idx = (d * B + b) * H + j;
        scalar_t* g_row = a.gates + ((d * T + t) * B + b) * G;
        scalar_t* y_p = a.y + (t * B + b) * D * H + d * H + j;
        const float c_prev = a.c_state[s_idx];
        if (!row_valid(a.lengths, b, t)) {  // padding: state carried, gates and output zero
#pragma unroll
          for (int q = 0; q < 4; ++q) g_row[q * H + j] = scalar_t(0.0f);
          a.cells[((d * T + t) * B + b) * H + j] = static_cast<scalar_t>(c_prev);
          *y_p = scalar_t(0.0f);
          h_out[b * H + j] = __ldcg(h_in + b * H + j);
          continue;
        }
        const scalar_t* zx = a.gx + ((t * B + b) * D + d) * G + j;
        float z[4];
#pragma unroll
        for (int q = 0; q < 4; ++q)
          z[q] = z_s[bb * 4 * U + q * U + uu] + static_cast<float>(zx[q * H]);
        CellPeep<float> peep{0.0f, 0.0f, 0.0f};
        if (a.peep != nullptr)
          peep = {static_cast<float>(a.peep[(d * 3 + 0) * H + j]),
                  static_cast<float>(a.peep[(d * 3 + 1) * H + j]),
                  static_cast<float>(a.peep[(d * 3 + 2) * H + j])};
        const CellForward<float> r = cell_forward<float>(z[0], z[1], z[2], z[3], c_prev, peep);
        g_row[j] = static_cast<scalar_t>(r.i);
        g_row[H + j] = static_cast<scalar_t>(r.f);
        g_row[2 * H + j] = static_cast<scalar_t>(r.g);
        g_row[3 * H + j] = static_cast<scalar_t>(r.o);
        a.cells[((d * T + t) * B + b) * H + j] = static_cast<scalar_t>(r.c);
        a.c_state[s_idx] = round_to<scalar_t>(r.c);
        *y_p = static_cast<scalar_t>(r.h);
        h_out[b * H + j] = round_to<scalar_t>(r.h);
      }
      __syncthreads();  // z_s is reused by the next batch chunk
    }
    grid.sync();
  }
  const float* h_last = h_x + (T % 2) * D * B * H;
  for (int64_t e = threadIdx.x; e < B * nu; e += blockDim.x) {
    const int64_t b = e / nu, j = u0 + e % nu;
    const int64_t s_idx = (d * B + b) * H + j;
    a.h_n[s_idx] = static_cast<scalar_t>(__ldcg(h_last + s_idx));  // exchange buffer: via L2
    a.c_n[s_idx] = static_cast<scalar_t>(a.c_state[s_idx]);
  }
}

// Dynamic shared memory: w_s (U, G) scalar_t: w_s[uu * G + r] = W_hh[d][r][u0 + uu].
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads, 1)
    persistent_backward_kernel(PersistentBackwardArgs<scalar_t> a, int units) {
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  const int64_t H = a.H, G = 4 * H, B = a.B, T = a.T, D = a.D;
  const int64_t U = units, blocks_per_dir = (H + U - 1) / U;
  const int64_t d = blockIdx.x / blocks_per_dir;
  const int64_t u0 = (blockIdx.x % blocks_per_dir) * U;
  const int64_t nu = min(U, H - u0);
  scalar_t* w_s = reinterpret_cast<scalar_t*>(smem_raw);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  cg::grid_group grid = cg::this_grid();

  const scalar_t* w_d = a.w_hh + d * G * H;
  for (int64_t e = threadIdx.x; e < G * nu; e += blockDim.x) {
    const int64_t r = e / nu, uu = e % nu;
    w_s[uu * G + r] = w_d[r * H + u0 + uu];
  }
  for (int64_t e = threadIdx.x; e < B * nu; e += blockDim.x) {
    const int64_t b = e / nu, j = u0 + e % nu;
    const int64_t s_idx = (d * B + b) * H + j;
    a.dh_state[s_idx] = static_cast<float>(a.grad_h_n[s_idx]);
    a.dc_state[s_idx] = static_cast<float>(a.grad_c_n[s_idx]);
  }
  __syncthreads();

  // Iteration k handles forward step s = T - 1 - k; iteration k also finishes the recurrent
  // gradient of step s + 1 (done in iteration k - 1), and iteration T only that.
  for (int64_t k = 0; k <= T; ++k) {
    if (k > 0) {
      const int64_t s_done = T - k;  // forward step whose dz is in the exchange buffer
      const int64_t t_done = d == 0 ? s_done : T - 1 - s_done;
      const float* dz_in = a.dz_exchange + ((k - 1) % 2) * D * B * G + d * B * G;  // (B, G)
      for (int64_t o = warp; o < B * nu; o += kWarps) {
        const int64_t b = o / nu, uu = o % nu;
        const scalar_t* w_col = w_s + uu * G;
        const float* dz_row = dz_in + b * G;
        float acc = 0.0f;
        for (int64_t r = lane; r < G; r += 32) acc += static_cast<float>(w_col[r]) * __ldcg(dz_row + r);
        acc = warp_sum(acc);
        // Padded rows of that step passed no gradient: their dh_state is kept.
        if (lane == 0 && row_valid(a.lengths, b, t_done))
          a.dh_state[(d * B + b) * H + u0 + uu] = round_to<scalar_t>(acc);
      }
      __syncthreads();
    }
    if (k == T) break;
    const int64_t step = T - 1 - k;
    const int64_t t = d == 0 ? step : T - 1 - step;
    const int64_t t_prev = d == 0 ? t - 1 : t + 1;
    float* dz_out = a.dz_exchange + (k % 2) * D * B * G + d * B * G;  // (B, G)
    for (int64_t e = threadIdx.x; e < B * nu; e += blockDim.x) {
      const int64_t b = e / nu, j = u0 + e % nu;
      const int64_t s_idx = (d * B + b) * H + j;
      scalar_t* dz_row = a.dz + ((t * B + b) * D + d) * G;
      if (!row_valid(a.lengths, b, t)) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          dz_row[q * H + j] = scalar_t(0.0f);
          dz_out[b * G + q * H + j] = 0.0f;
        }
        continue;
      }
      const scalar_t* g_row = a.gates + ((d * T + t) * B + b) * G;
      const float c = static_cast<float>(a.cells[((d * T + t) * B + b) * H + j]);
      const float c_prev = static_cast<float>(
          step == 0 ? a.c0[s_idx] : a.cells[((d * T + t_prev) * B + b) * H + j]);
      const float dh = static_cast<float>(a.grad_y[(t * B + b) * D * H + d * H + j]) +
                       a.dh_state[s_idx];
      CellPeep<float> peep{0.0f, 0.0f, 0.0f};
      if (a.peep != nullptr)
        peep = {static_cast<float>(a.peep[(d * 3 + 0) * H + j]),
                static_cast<float>(a.peep[(d * 3 + 1) * H + j]),
                static_cast<float>(a.peep[(d * 3 + 2) * H + j])};
      const CellBackward<float> r = cell_backward<float>(
          static_cast<float>(g_row[j]), static_cast<float>(g_row[H + j]),
          static_cast<float>(g_row[2 * H + j]), static_cast<float>(g_row[3 * H + j]), c, c_prev,
          dh, a.dc_state[s_idx], peep);
      const float dzq[4] = {r.dz_i, r.dz_f, r.dz_g, r.dz_o};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        dz_row[q * H + j] = static_cast<scalar_t>(dzq[q]);
        dz_out[b * G + q * H + j] = round_to<scalar_t>(dzq[q]);
      }
      a.dc_state[s_idx] = round_to<scalar_t>(r.dc_prev);
    }
    grid.sync();
  }
  for (int64_t e = threadIdx.x; e < B * nu; e += blockDim.x) {
    const int64_t b = e / nu, j = u0 + e % nu;
    const int64_t s_idx = (d * B + b) * H + j;
    a.grad_h0[s_idx] = static_cast<scalar_t>(a.dh_state[s_idx]);
    a.grad_c0[s_idx] = static_cast<scalar_t>(a.dc_state[s_idx]);
  }
}

}  // namespace

template <typename scalar_t>
PersistentPlan plan_persistent(int device, int64_t B, int64_t H, int64_t D, bool backward) {
  PersistentPlan plan;
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)device;
  if (B <= 0 || H <= 0) return plan;
  plan.fits = true;
  plan.units = kEmulatedUnits;
  plan.blocks = static_cast<int>(D * ((H + kEmulatedUnits - 1) / kEmulatedUnits));
  plan.threads = kThreads;
  plan.batch_chunk = static_cast<int>(std::min<int64_t>(B, kMaxBatchChunk));
  plan.smem = persistent_smem_bytes(plan.units, plan.batch_chunk, H, sizeof(scalar_t), backward);
  return plan;
#else
  int cooperative = 0, sms = 0, smem_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (!cooperative) return plan;
  for (const PersistentCandidate& c :
       persistent_candidates(B, H, D, sizeof(scalar_t), backward, static_cast<size_t>(smem_optin))) {
    const void* kernel = backward
                             ? reinterpret_cast<const void*>(&persistent_backward_kernel<scalar_t>)
                             : reinterpret_cast<const void*>(&persistent_forward_kernel<scalar_t>);
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(c.smem)));
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, c.smem));
    if (per_sm > 0 && c.blocks <= static_cast<int64_t>(per_sm) * sms) {
      plan.fits = true;
      plan.units = c.units;
      plan.blocks = static_cast<int>(c.blocks);
      plan.threads = kThreads;
      plan.batch_chunk = c.batch_chunk;
      plan.smem = c.smem;
      return plan;
    }
  }
  return plan;
#endif
}

template <typename scalar_t>
void launch_persistent_forward(const PersistentForwardArgs<scalar_t>& a, const PersistentPlan& plan,
                               cudaStream_t stream) {
  PersistentForwardArgs<scalar_t> args = a;
  int units = plan.units, batch_chunk = plan.batch_chunk;
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)stream;
  lstm_fused_emulation::launch_cooperative(&persistent_forward_kernel<scalar_t>, dim3(plan.blocks),
                                           dim3(plan.threads), plan.smem, args, units, batch_chunk);
#else
  void* params[] = {&args, &units, &batch_chunk};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(&persistent_forward_kernel<scalar_t>), dim3(plan.blocks),
      dim3(plan.threads), params, plan.smem, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

template <typename scalar_t>
void launch_persistent_backward(const PersistentBackwardArgs<scalar_t>& a,
                                const PersistentPlan& plan, cudaStream_t stream) {
  PersistentBackwardArgs<scalar_t> args = a;
  int units = plan.units;
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)stream;
  lstm_fused_emulation::launch_cooperative(&persistent_backward_kernel<scalar_t>,
                                           dim3(plan.blocks), dim3(plan.threads), plan.smem, args,
                                           units);
#else
  void* params[] = {&args, &units};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(
      reinterpret_cast<const void*>(&persistent_backward_kernel<scalar_t>), dim3(plan.blocks),
      dim3(plan.threads), params, plan.smem, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

#define LSTM_FUSED_INSTANTIATE_PERSISTENT(T_)                                                   \
  template PersistentPlan plan_persistent<T_>(int, int64_t, int64_t, int64_t, bool);            \
  template void launch_persistent_forward<T_>(const PersistentForwardArgs<T_>&,                 \
                                              const PersistentPlan&, cudaStream_t);             \
  template void launch_persistent_backward<T_>(const PersistentBackwardArgs<T_>&,               \
                                               const PersistentPlan&, cudaStream_t);

LSTM_FUSED_INSTANTIATE_PERSISTENT(float)
LSTM_FUSED_INSTANTIATE_PERSISTENT(c10::Half)
LSTM_FUSED_INSTANTIATE_PERSISTENT(c10::BFloat16)
#undef LSTM_FUSED_INSTANTIATE_PERSISTENT

}  // namespace cuda
}  // namespace lstm_fused
