// Tensor-core forward time loop of the CUDA LSTM, bf16 / fp16 storage, float accumulation:
// the whole loop of one layer (both directions) in one launch, with no grid barrier.
// Arguments and plan: lstm_tc_forward.h, lstm_tc_plan.h; primitives: tc_primitives.cuh.
// Included by lstm_tc_forward_bf16.cu and lstm_tc_forward_f16.cu (one storage type each).
//
// Work split. CTA c of direction d owns hidden units [u0, u0 + kUnits), u0 = c kUnits, with all
// four gates, so the cell update is local. Gate column n of the CTA is unit n / 4, gate n % 4.
// Its W_hh slice stays in registers for the whole loop as mma.m16n8k16 B fragments: warp w
// holds the rows k of its K-slice [k0, k0 + 16 kKSteps), k0 = 16 kKSteps w, for every n-tile.
// A step (time t of direction d):
//   1. warp w waits (acquire) until every CTA that owns a unit of its K-slice has published
//      h_{t-1}, then copies that slice of h_{t-1} (B rows) into shared memory h_s with
//      cp.async (L2, never a stale L1 line); rows whose state is reset read h0 instead;
//   2. ldmatrix + mma: its partial z (M = batch rows, N = the CTA's gate columns) over its
//      K-slice, summed across warps through shared memory (red) and one __syncthreads;
//   3. the cell math, one thread per (batch row, unit): z + gx[t] (loaded one step ahead),
//      c in a register, h_t rounded to the storage type to the exchange buffer;
//   4. __syncthreads, then thread 0 publishes flag[d][c] = step + 1 (st.release.gpu);
//   5. only then y, gates and cells are stored (a release must wait for the stores before it,
//      so the big stores stay off the critical path), and gx of the next step is loaded.
// Exchange: h_exchange (2, D, B, H), step s written to slot s % 2 (step 0 reads h0). Writing
// slot s % 2 at step s overwrites h_{s-2}: safe, because a CTA writes only after its warps
// together waited for every CTA of its direction to publish step s - 1, i.e. to finish
// reading h_{s-2}. Every CTA must be resident at once (cooperative launch, occupancy-checked),
// though no grid.sync is used.
// Memory ordering (what the CPU emulation cannot check; compute-sanitizer and a stress run on
// a GPU must): the producer's h stores are ordered before thread 0's st.release.gpu by the
// __syncthreads between them (release is cumulative); a consumer lane's ld.acquire.gpu is
// ordered before its warp's cp.async reads by the __syncwarp after the wait; the reads go
// through L2 (.cg), never a stale L1 line.
// Masked steps (t >= lengths[b]) keep h and c, write zero gates and y, and carry c in cells,
// as the gate-kernel path does (lstm_gate_kernels.cu); saved gates/cells have its layout.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>

#include "cuda/lstm_cuda_runtime.h"
#include "cuda/lstm_tc_forward.h"
#include "cuda/lstm_tc_plan.h"
#include "cuda/tc_primitives.cuh"
#include "lstm_cell_math.h"

namespace lstm_fused {
namespace cuda {
namespace tc_forward {

template <typename scalar_t>
__device__ __forceinline__ uint16_t bits_of(const scalar_t* p) {
  return *reinterpret_cast<const uint16_t*>(p);
}

// Whether the state of row b is replaced by the initial state before time t is computed.
// Direction 0: a reset at t. Direction 1 (t runs backwards): a reset at t + 1 marks the
// boundary between t and t + 1. (Lengths need no test here: a step at t >= lengths[b] is
// masked and keeps its state, and the first valid step of direction 1 starts from the initial
// state anyway.)
__device__ __forceinline__ bool reset_before(const bool* resets, int64_t d, int64_t t, int64_t T,
                                             int64_t B, int64_t b) {
  if (resets == nullptr) return false;
  if (d == 0) return t > 0 && resets[t * B + b];
  return t + 1 < T && resets[(t + 1) * B + b];
}

template <typename scalar_t, int kUnits, int kWarps, int kKSteps, int kMTiles>
__global__ void __launch_bounds__(kWarps * 32, 1) tc_forward_kernel(TcForwardParams<scalar_t> p) {
  constexpr int kThreads = kWarps * 32;
  constexpr int kN = 4 * kUnits;  // gate columns of the CTA
  constexpr int kNTiles = (kN + 7) / 8;
  constexpr int kNP = kNTiles * 8;          // padded columns of red
  constexpr int kKW = 16 * kKSteps;         // K per warp
  constexpr int kPitch = kWarps * kKW + 8;  // 16-bit values per h_s row (+16 bytes)
  constexpr int kM = 16 * kMTiles;          // batch rows (padded)
  constexpr int kCells = (kM * kUnits + kThreads - 1) / kThreads;  // cells per thread

  LSTM_FUSED_DYNAMIC_SHARED(smem);
  uint16_t* h_s = reinterpret_cast<uint16_t*>(smem);  // (kM, kPitch)
  float* red = reinterpret_cast<float*>(smem + tc_align16(sizeof(uint16_t) * kM * kPitch));
  // red: (kWarps, kM, kNP) partial sums

  const int64_t T = p.T, B = p.B, H = p.H, D = p.D, G = 4 * H;
  const int64_t ctas = (H + kUnits - 1) / kUnits;
  const int64_t d = blockIdx.x / ctas, cta = blockIdx.x % ctas;
  const int64_t u0 = cta * kUnits;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t k0 = static_cast<int64_t>(warp) * kKW;
  const int64_t k_end = std::min<int64_t>(k0 + kKW, H);  // this warp's K-slice [k0, k_end)
  unsigned* flags = p.flags + d * ctas * kTcFlagStride;

  // h_s starts zero: padded rows (b >= B) and columns (k >= H) stay zero.
  for (int e = threadIdx.x; e < kM * kPitch; e += kThreads) h_s[e] = 0;

  // This warp's B fragments: element (k, n) = W_hh[d][(n % 4) H + u0 + n / 4][k].
  uint32_t wf[kKSteps][kNTiles][2];
  {
    const scalar_t* w = p.w_hh + d * G * H;
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      const int n = nt * 8 + g;
      const int64_t j = u0 + n / 4;
      const bool col_ok = n < kN && j < H;
      const scalar_t* w_row = w + ((n % 4) * H + j) * H;
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int64_t k = k0 + ks * 16 + 2 * t4 + 8 * r;
          const uint32_t lo = col_ok && k < H ? bits_of(w_row + k) : 0u;
          const uint32_t hi = col_ok && k + 1 < H ? bits_of(w_row + k + 1) : 0u;
          wf[ks][nt][r] = lo | hi << 16;
        }
    }
  }

  // The cells of this thread: element e = threadIdx.x + i kThreads is (row e / kUnits, unit
  // u0 + e % kUnits); c and h stay in registers across steps.
  float c_reg[kCells], h_reg[kCells], gx_reg[kCells][4], peep_reg[kCells][3];
  int64_t len_reg[kCells];
  bool active[kCells];
#pragma unroll
  for (int i = 0; i < kCells; ++i) {
    const int e = threadIdx.x + i * kThreads;
    const int64_t b = e / kUnits, j = u0 + e % kUnits;
    active[i] = e < kM * kUnits && b < B && j < H;
    c_reg[i] = h_reg[i] = 0.0f;
    len_reg[i] = T;
#pragma unroll
    for (int q = 0; q < 3; ++q) peep_reg[i][q] = 0.0f;
#pragma unroll
    for (int q = 0; q < 4; ++q) gx_reg[i][q] = 0.0f;
    if (!active[i]) continue;
    const int64_t s_idx = (d * B + b) * H + j;
    c_reg[i] = static_cast<float>(p.c0[s_idx]);
    h_reg[i] = static_cast<float>(p.h0[s_idx]);
    if (p.lengths != nullptr) len_reg[i] = p.lengths[b];
    if (p.peep != nullptr)
#pragma unroll
      for (int q = 0; q < 3; ++q) peep_reg[i][q] = static_cast<float>(p.peep[(d * 3 + q) * H + j]);
    const int64_t t0 = d == 0 ? 0 : T - 1;
    const scalar_t* zx = p.gx + ((t0 * B + b) * D + d) * G + j;
#pragma unroll
    for (int q = 0; q < 4; ++q) gx_reg[i][q] = static_cast<float>(zx[q * H]);
  }
  __syncthreads();  // h_s zeroed before any warp copies into it

  const scalar_t* h0_d = p.h0 + d * B * H;
  for (int64_t step = 0; step < T; ++step) {
    const int64_t t = d == 0 ? step : T - 1 - step;
    const scalar_t* h_src =
        step == 0 ? h0_d : p.h_exchange + ((step - 1) % 2) * D * B * H + d * B * H;

    // 1. Wait for the producers of this warp's K-slice, then stage it.
    if (k0 < H) {
      if (step > 0) {
        for (int64_t c = k0 / kUnits + lane; c <= (k_end - 1) / kUnits; c += 32)
          tc::wait_geq_acquire(flags + c * kTcFlagStride, static_cast<unsigned>(step));
        __syncwarp();
      }
      const int64_t per_row = (k_end - k0) / 8;  // 16-byte pieces
      for (int64_t e = lane; e < B * per_row; e += 32) {
        const int64_t b = e / per_row, k = k0 + (e % per_row) * 8;
        const scalar_t* row = reset_before(p.resets, d, t, T, B, b) ? h0_d + b * H : h_src + b * H;
        tc::cp_async_16(h_s + b * kPitch + k, row + k);
      }
      tc::cp_async_commit();
      tc::cp_async_wait_all();
    }
    __syncwarp();

    // 2. Partial z over the K-slice: acc[mt][nt] is the (16 x 8) tile (rows 16 mt.., gate
    // columns 8 nt..), in the C fragment layout.
    float acc[kMTiles][kNTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
    if (k0 < H) {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt) {
          // Lane l addresses row l % 8 of matrix l / 8: matrices (rows 0-7 | 8-15) x
          // (cols 0-7 | 8-15) of the tile, so r[0..3] is the A fragment.
          uint32_t a[4];
          const int row = mt * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
          tc::ldmatrix_x4(a, h_s + row * kPitch + k0 + ks * 16 + (lane / 16) * 8);
#pragma unroll
          for (int nt = 0; nt < kNTiles; ++nt)
            tc::mma_16816<scalar_t>(acc[mt][nt], a, wf[ks][nt], acc[mt][nt]);
        }
      }
    }
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNTiles; ++nt)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float* dst = red + (warp * kM + mt * 16 + g + 8 * half) * kNP + nt * 8 + 2 * t4;
          dst[0] = acc[mt][nt][2 * half];
          dst[1] = acc[mt][nt][2 * half + 1];
        }
    __syncthreads();

    // 3. Cell math; h_t to the exchange buffer.
    scalar_t* h_dst = p.h_exchange + (step % 2) * D * B * H + d * B * H;
    float out[kCells][4];  // activated gates i, f, g, o of valid steps, stored after the flag
    bool valid[kCells];
#pragma unroll
    for (int i = 0; i < kCells; ++i) {
      valid[i] = false;
#pragma unroll
      for (int q = 0; q < 4; ++q) out[i][q] = 0.0f;
      if (!active[i]) continue;
      const int e = threadIdx.x + i * kThreads;
      const int b = e / kUnits, u = e % kUnits;
      const int64_t j = u0 + u;
      valid[i] = t < len_reg[i];
      if (valid[i]) {
        float z[4];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          float sum = gx_reg[i][q];
#pragma unroll
          for (int w = 0; w < kWarps; ++w) sum += red[(w * kM + b) * kNP + 4 * u + q];
          z[q] = sum;
        }
        const float c_prev = reset_before(p.resets, d, t, T, B, b)
                                 ? static_cast<float>(p.c0[(d * B + b) * H + j])
                                 : c_reg[i];
        const CellPeep<float> peep{peep_reg[i][0], peep_reg[i][1], peep_reg[i][2]};
        const CellForward<float> r = cell_forward<float>(z[0], z[1], z[2], z[3], c_prev, peep);
        out[i][0] = r.i;
        out[i][1] = r.f;
        out[i][2] = r.g;
        out[i][3] = r.o;
        c_reg[i] = r.c;
        h_reg[i] = static_cast<float>(static_cast<scalar_t>(r.h));
      }
      h_dst[b * H + j] = static_cast<scalar_t>(h_reg[i]);
    }

    // 4. Publish h_t of this CTA.
    __syncthreads();
    if (threadIdx.x == 0)
      tc::st_release_gpu(flags + cta * kTcFlagStride, static_cast<unsigned>(step + 1));

    // 5. Outputs of this step, then gx of the next one.
    const int64_t t_next = d == 0 ? step + 1 : T - 2 - step;
#pragma unroll
    for (int i = 0; i < kCells; ++i) {
      if (!active[i]) continue;
      const int e = threadIdx.x + i * kThreads;
      const int64_t b = e / kUnits, j = u0 + e % kUnits;
      p.y[(t * B + b) * D * H + d * H + j] = static_cast<scalar_t>(valid[i] ? h_reg[i] : 0.0f);
      if (p.gates != nullptr) {
        scalar_t* g_row = p.gates + ((d * T + t) * B + b) * G + j;
#pragma unroll
        for (int q = 0; q < 4; ++q)
          g_row[q * H] = static_cast<scalar_t>(valid[i] ? out[i][q] : 0.0f);
        p.cells[((d * T + t) * B + b) * H + j] = static_cast<scalar_t>(c_reg[i]);
      }
      if (step + 1 < T) {
        const scalar_t* zx = p.gx + ((t_next * B + b) * D + d) * G + j;
#pragma unroll
        for (int q = 0; q < 4; ++q) gx_reg[i][q] = static_cast<float>(zx[q * H]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < kCells; ++i) {
    if (!active[i]) continue;
    const int e = threadIdx.x + i * kThreads;
    const int64_t b = e / kUnits, j = u0 + e % kUnits;
    const int64_t s_idx = (d * B + b) * H + j;
    p.h_n[s_idx] = static_cast<scalar_t>(h_reg[i]);
    p.c_n[s_idx] = static_cast<scalar_t>(c_reg[i]);
  }
}

template <typename scalar_t>
using KernelFn = void (*)(TcForwardParams<scalar_t>);

// The kernels of tc_forward_configs(), in its order.
template <typename scalar_t>
const KernelFn<scalar_t>* kernels() {
#define LSTM_FUSED_TC_KERNEL_ENTRY(U, W, K, M) &tc_forward_kernel<scalar_t, U, W, K, M>,
  static const KernelFn<scalar_t> table[] = {
      LSTM_FUSED_TC_FORWARD_CONFIGS(LSTM_FUSED_TC_KERNEL_ENTRY)};
#undef LSTM_FUSED_TC_KERNEL_ENTRY
  return table;
}

}  // namespace tc_forward

template <typename scalar_t>
TcForwardPlan plan_tc_forward(int device, int64_t B, int64_t H, int64_t D, int64_t P) {
  TcForwardPlan plan;
  const auto& configs = tc_forward_configs();
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)device;
  const size_t smem_optin = 1 << 20;  // the emulation has no limit: the GPU plans are tested
                                      // by tests/test_cuda_resources.py
#else
  int cooperative = 0, sms = 0, optin = 0, major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) {
    plan.reason = "the device's compute capability is below 8.0 (mma.sync bf16/f16)";
    return plan;
  }
  if (!cooperative) {
    plan.reason = "the device does not support cooperative launches (all CTAs co-resident)";
    return plan;
  }
  const size_t smem_optin = static_cast<size_t>(optin);
#endif
  const std::vector<TcForwardCandidate> cands =
      tc_forward_candidates(B, H, D, P, smem_optin, &plan.reason);
  for (const TcForwardCandidate& c : cands) {
    const TcForwardConfig& cfg = configs[c.config];
    const int threads = cfg.warps * 32;
#if !defined(LSTM_FUSED_CUDA_EMULATION)
    const void* kernel = reinterpret_cast<const void*>(tc_forward::kernels<scalar_t>()[c.config]);
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(c.smem)));
    int per_sm = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, c.smem));
    if (per_sm <= 0 || c.ctas > static_cast<int64_t>(per_sm) * sms) {
      plan.reason = "its " + std::to_string(c.ctas) + " CTAs (" + std::to_string(cfg.units) +
                    " units each) cannot all be resident at once (" + std::to_string(per_sm) +
                    " per SM on " + std::to_string(sms) + " SMs)";
      continue;
    }
#endif
    plan.fits = true;
    plan.config = c.config;
    plan.ctas = static_cast<int>(c.ctas);
    plan.threads = threads;
    plan.smem = c.smem;
    plan.flag_words = static_cast<size_t>(c.ctas) * kTcFlagStride;
    plan.reason.clear();
    return plan;
  }
  return plan;
}

template <typename scalar_t>
void launch_tc_forward(const TcForwardParams<scalar_t>& p, const TcForwardPlan& plan,
                       cudaStream_t stream) {
  TcForwardParams<scalar_t> args = p;
  const tc_forward::KernelFn<scalar_t> kernel = tc_forward::kernels<scalar_t>()[plan.config];
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)stream;
  lstm_fused_emulation::launch_cooperative(kernel, dim3(plan.ctas), dim3(plan.threads), plan.smem,
                                           args);
#else
  void* params[] = {&args};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(plan.ctas),
                                             dim3(plan.threads), params, plan.smem, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

#define LSTM_FUSED_INSTANTIATE_TC_FORWARD(T_)                                           \
  template TcForwardPlan plan_tc_forward<T_>(int, int64_t, int64_t, int64_t, int64_t);  \
  template void launch_tc_forward<T_>(const TcForwardParams<T_>&, const TcForwardPlan&, \
                                      cudaStream_t);

}  // namespace cuda
}  // namespace lstm_fused
