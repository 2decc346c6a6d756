// Tensor-core backward time loop of the CUDA LSTM (sm_80 and newer; bfloat16 and float16 with
// float accumulation): the reverse loop of every direction in one launch, no grid barrier.
// Arguments: lstm_tc_backward.h; plan and work split: lstm_tc_backward_plan.h; letters:
// csrc/lstm_cell_math.h; the mma/ldmatrix/flag wrappers: tc_primitives.cuh.
//
// Iteration k = 0 .. T - 1 handles forward step s = T - 1 - k of each direction (time t = s in
// direction 0, T - 1 - s in direction 1); a CTA owns `units` hidden units j of one direction:
//   1. (k > 0) recurrent gradient dh_rec[b, j] = sum_r dz_{k-1}[b, r] W_hh[r, j] of its units:
//      each warp waits (ld.acquire.gpu) only for the CTAs that produced its K slice of the dz
//      rows of iteration k - 1, stages the slice in shared memory (cp.async), 16 batch rows
//      (one m16 tile) at a time, reads it with ldmatrix and multiplies it with the W_hh
//      columns it keeps in registers (mma.sync m16n8k16, A = dz (batch rows x K), B = W_hh
//      columns (K x 8 units)); m16 tiles past B are skipped; the warps' partial sums meet in
//      shared memory.
//   2. cell backward of its units at step s from the saved gates/cells (operands loaded during
//      the previous iteration), giving dz of step s and the gradient of c_{t-1};
//   3. its dz rows go to the exchange buffer slot k % 2, then, after __syncthreads, one
//      st.release.gpu of flag = k + 1; dz is stored to the output after the flag.
// Iteration T does step 1 only, for the gradient of the initial state.
//
// Exchange rows are in producer order: position p * 4U + q * U + u holds gate q of unit
// p * U + u (U = units), so a warp's K slice comes from a few consecutive CTAs; the weight
// fragments use the same order. Padding positions (units past H, k past 4U * ctas, rows past
// B) are zero in the buffer (zeroed by the host, never written) and in the weights.
// Double buffering needs no barrier: a CTA writes slot k % 2 only after it has seen every
// producer's flag k (its warps' K slices cover all producers of its direction), and each
// producer raised flag k after it had finished reading slot k % 2 (iteration k - 1's input).
//
// Masked steps (t >= lengths[b]) write dz = 0 and pass the state gradients through unchanged.
// Resets (INTERFACES: a reset replaces the carried state by the initial one) cut the carried
// gradient: a step that started from the initial state sends dh, dc of that state to the
// grad_h0 / grad_c0 accumulators and carries zero.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cuda/lstm_cuda_runtime.h"
#include "cuda/lstm_tc_backward.h"
#include "cuda/tc_primitives.cuh"
#include "lstm_cell_math.h"

namespace lstm_fused {
namespace cuda {
namespace tc_backward_detail {

template <typename scalar_t>
__device__ __forceinline__ uint32_t bits16(scalar_t v) {
  return static_cast<uint32_t>(v.x);
}

// Operands of one cell element (batch row b, unit j) at one step, loaded a step ahead.
struct CellOperands {
  float i, f, g, o, c, c_prev, gy;
  bool valid, fresh;  // valid step; started from the initial state through a reset
};

template <typename scalar_t>
__device__ __forceinline__ CellOperands load_operands(const TcBackwardArgs<scalar_t>& a, int64_t d,
                                                      int64_t t, int64_t b, int64_t j) {
  const int64_t T = a.T, B = a.B, H = a.H, G = 4 * H;
  int64_t len = T;
  if (a.lengths != nullptr) {  // any value is memory-safe: < 0 acts as 0, > T as T
    len = a.lengths[b];
    len = len < 0 ? 0 : (len > T ? T : len);
  }
  CellOperands r;
  r.valid = t < len;
  r.fresh = false;
  bool first;  // the step's c_prev is the initial c0
  if (d == 0) {
    r.fresh = r.valid && a.resets != nullptr && t > 0 && a.resets[t * B + b];
    first = t == 0 || r.fresh;
  } else {
    r.fresh = r.valid && a.resets != nullptr && t + 1 < len && a.resets[(t + 1) * B + b];
    first = t + 1 >= len || r.fresh;
  }
  const scalar_t* g_row = a.gates + ((d * T + t) * B + b) * G + j;
  r.i = static_cast<float>(g_row[0]);
  r.f = static_cast<float>(g_row[H]);
  r.g = static_cast<float>(g_row[2 * H]);
  r.o = static_cast<float>(g_row[3 * H]);
  r.c = static_cast<float>(a.cells[((d * T + t) * B + b) * H + j]);
  const int64_t t_prev = d == 0 ? t - 1 : t + 1;
  r.c_prev = static_cast<float>(first ? a.c0[(d * B + b) * H + j]
                                      : a.cells[((d * T + t_prev) * B + b) * H + j]);
  r.gy = static_cast<float>(a.grad_y[(t * B + b) * a.D * H + d * H + j]);
  return r;
}

// One thread's cell elements in a tensor-core backward loop (tc_backward_kernel and the cluster
// kernel of lstm_tc_backward_cluster.cuh): element e = tid + i * kThreads, i < kSlots, of the
// CTA's B x nu owned (batch row, unit) pairs is (b, u) = (e / nu, e % nu), unit j = u0 + u. It
// carries dh and dc back through time, collects what reaches a reset (or the first) step for
// grad_h0 / grad_c0, and holds the operands of the step to come (loaded a step ahead).
template <typename scalar_t, int kSlots, int kThreads>
struct CellSlots {
  float dh[kSlots], dc[kSlots], acc_h[kSlots], acc_c[kSlots];
  CellOperands op[kSlots];
  bool prev_valid[kSlots], prev_fresh[kSlots];  // of the step done in the last iteration
  CellPeep<float> peep[kSlots];
  int64_t d, u0;
  int tid, nu;

  __device__ __forceinline__ bool has(const TcBackwardArgs<scalar_t>& a, int i) const {
    return tid + i * kThreads < a.B * nu;
  }
  __device__ __forceinline__ int64_t b(int i) const { return (tid + i * kThreads) / nu; }
  __device__ __forceinline__ int u(int i) const { return (tid + i * kThreads) % nu; }
  // The time step of iteration k (the loop runs backwards in time for direction 0).
  __device__ __forceinline__ int64_t time(const TcBackwardArgs<scalar_t>& a, int64_t k) const {
    return d == 0 ? a.T - 1 - k : k;
  }

  // dh, dc from grad_h_n, grad_c_n; the peepholes; the operands of iteration 0.
  __device__ __forceinline__ void init(const TcBackwardArgs<scalar_t>& a) {
    const int64_t B = a.B, H = a.H;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      dh[i] = dc[i] = acc_h[i] = acc_c[i] = 0.0f;
      prev_valid[i] = prev_fresh[i] = false;
      peep[i] = {0.0f, 0.0f, 0.0f};
      if (!has(a, i)) continue;
      const int64_t j = u0 + u(i), s_idx = (d * B + b(i)) * H + j;
      dh[i] = static_cast<float>(a.grad_h_n[s_idx]);
      dc[i] = static_cast<float>(a.grad_c_n[s_idx]);
      if (a.peep != nullptr)
        peep[i] = {static_cast<float>(a.peep[(d * 3 + 0) * H + j]),
                   static_cast<float>(a.peep[(d * 3 + 1) * H + j]),
                   static_cast<float>(a.peep[(d * 3 + 2) * H + j])};
      op[i] = load_operands(a, d, time(a, 0), b(i), j);
    }
  }

  // The recurrent gradient `sum` of the step done in the last iteration reaches element i:
  // dh of this step, or grad_h0 where that step started from the initial state.
  __device__ __forceinline__ void add_recurrent(int i, float sum) {
    if (prev_fresh[i]) {
      acc_h[i] += sum;
      dh[i] = 0.0f;
    } else {
      dh[i] = sum;
    }
  }

  // The cell backward of element i at this iteration's step: dz of its 4 gates (zero where the
  // step is masked), dc carried (or collected at a reset).
  __device__ __forceinline__ void cell_step(int i, float dz[4]) {
    dz[0] = dz[1] = dz[2] = dz[3] = 0.0f;
    const CellOperands& o = op[i];
    if (o.valid) {
      const CellBackward<float> r =
          cell_backward<float>(o.i, o.f, o.g, o.o, o.c, o.c_prev, o.gy + dh[i], dc[i], peep[i]);
      dz[0] = r.dz_i;
      dz[1] = r.dz_f;
      dz[2] = r.dz_g;
      dz[3] = r.dz_o;
      if (o.fresh) {
        acc_c[i] += r.dc_prev;
        dc[i] = 0.0f;
      } else {
        dc[i] = r.dc_prev;
      }
    }
    prev_valid[i] = o.valid;
    prev_fresh[i] = o.fresh;
  }

  // After the flag: the dz output of iteration k (off the critical path) and the operands of
  // iteration k + 1.
  __device__ __forceinline__ void store_dz_and_load_next(const TcBackwardArgs<scalar_t>& a,
                                                         int64_t k, const float (&dz)[kSlots][4]) {
    const int64_t B = a.B, H = a.H, D = a.D, G = 4 * H, t = time(a, k);
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      if (!has(a, i)) continue;
      const int64_t j = u0 + u(i);
      scalar_t* dz_row = a.dz + ((t * B + b(i)) * D + d) * G + j;
#pragma unroll
      for (int g = 0; g < 4; ++g) dz_row[g * H] = static_cast<scalar_t>(dz[i][g]);
      if (k + 1 < a.T) op[i] = load_operands(a, d, time(a, k + 1), b(i), j);
    }
  }

  // grad_h0, grad_c0: what reached the initial state at resets plus what is left at the end.
  __device__ __forceinline__ void finish(const TcBackwardArgs<scalar_t>& a) const {
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      if (!has(a, i)) continue;
      const int64_t s_idx = (d * a.B + b(i)) * a.H + u0 + u(i);
      a.grad_h0[s_idx] = static_cast<scalar_t>(acc_h[i] + dh[i]);
      a.grad_c0[s_idx] = static_cast<scalar_t>(acc_c[i] + dc[i]);
    }
  }
};

// grid: D * ctas CTAs of WARPS * 32 threads, all resident (cooperative launch), dynamic shared
// memory tc_backward_smem_bytes({WARPS, KSTEPS, MT}).
template <typename scalar_t, int WARPS, int KSTEPS, int MT>
__global__ void __launch_bounds__(WARPS * 32, 1) tc_backward_kernel(TcBackwardArgs<scalar_t> a) {
  constexpr int kThreads = WARPS * 32, kSlice = KSTEPS * 16, kRows = 16 * MT;
  constexpr int kPitch = tc_backward_pitch(KSTEPS);
  constexpr int kSlots = (kRows * 8 + kThreads - 1) / kThreads;  // cell elements per thread
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  uint16_t* s_dz = reinterpret_cast<uint16_t*>(smem_raw);  // (WARPS, 16, kPitch)
  float* s_part = reinterpret_cast<float*>(smem_raw + static_cast<size_t>(WARPS) * 16 * kPitch *
                                                          sizeof(uint16_t));  // (WARPS, kRows, 8)

  const int64_t T = a.T, B = a.B, H = a.H, D = a.D, G = 4 * H;
  const int U = a.units, ctas = a.ctas, K = a.k_total;
  const int d = static_cast<int>(blockIdx.x) / ctas, c = static_cast<int>(blockIdx.x) % ctas;
  const int u0 = c * U;
  const int nu = static_cast<int>(H - u0 < U ? H - u0 : U);  // units of this CTA
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int group = lane >> 2, tig = lane & 3;

  // W_hh columns of the CTA's units as B fragments of the warp's K slice (PTX ISA layout:
  // b_h holds rows k = 2 tig + 8 h and k + 1 of column n = group).
  uint32_t w_frag[KSTEPS][2];
  {
    const scalar_t* w_d = a.w_hh + d * G * H;
    auto w_bits = [&](int k) -> uint32_t {
      const int p = k / (4 * U), rem = k % (4 * U), q = rem / U, uu = rem % U;
      const int64_t j = static_cast<int64_t>(p) * U + uu;
      if (group >= nu || p >= ctas || j >= H) return 0u;
      return bits16(w_d[(q * H + j) * H + u0 + group]);
    };
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int k = warp * kSlice + ks * 16 + 2 * tig + 8 * h;
        w_frag[ks][h] = w_bits(k) | (w_bits(k + 1) << 16);
      }
  }
  // The producers of the warp's K slice: CTAs [p_lo, p_hi) of this direction.
  const int p_lo = warp * kSlice / (4 * U);
  const int p_hi_all = ((warp + 1) * kSlice + 4 * U - 1) / (4 * U);
  const int p_hi = p_hi_all < ctas ? p_hi_all : ctas;

  CellSlots<scalar_t, kSlots, kThreads> cells;  // this thread's cell elements
  cells.d = d;
  cells.u0 = u0;
  cells.tid = tid;
  cells.nu = nu;
  cells.init(a);

  scalar_t* x_dir = a.dz_exchange + static_cast<int64_t>(d) * kRows * K;  // slot 0, (kRows, K)
  const int64_t slot_stride = D * kRows * K;
  unsigned* flags = a.flags + static_cast<int64_t>(d) * ctas;
  uint16_t* s_mine = s_dz + warp * 16 * kPitch;
  const int m_used = static_cast<int>((B + 15) / 16);  // m16 tiles holding batch rows

  for (int64_t k = 0; k <= T; ++k) {
    if (k > 0) {
      // 1. dh_rec from the dz rows of iteration k - 1 (slot (k - 1) % 2).
      for (int p = p_lo + lane; p < p_hi; p += 32)
        tc::wait_geq_acquire(flags + p, static_cast<unsigned>(k));
      __syncwarp();
      const uint16_t* src =
          reinterpret_cast<const uint16_t*>(x_dir + ((k - 1) & 1) * slot_stride) + warp * kSlice;
      float acc[2][MT]
               [4];  // two accumulator chains (even / odd k-steps) halve the MMA latency chain
#pragma unroll
      for (int ch = 0; ch < 2; ++ch)
#pragma unroll
        for (int m = 0; m < MT; ++m)
#pragma unroll
          for (int v = 0; v < 4; ++v) acc[ch][m][v] = 0.0f;
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m >= m_used) break;
        constexpr int kChunks = kSlice / 8;  // 16-byte chunks per row
        const uint16_t* src_m = src + static_cast<int64_t>(m) * 16 * K;
        for (int ch = lane; ch < 16 * kChunks; ch += 32) {
          const int r = ch / kChunks, col = (ch % kChunks) * 8;
          tc::cp_async_16(s_mine + r * kPitch + col, src_m + static_cast<int64_t>(r) * K + col);
        }
        tc::cp_async_commit();
        tc::cp_async_wait_all();
        __syncwarp();
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
          // ldmatrix.x4: lane l gives row l % 8 of 8x8 matrix l / 8 = (rows +8 if odd, k +8 if >=
          // 2).
          uint32_t a_frag[4];
          const int row = (lane & 7) + 8 * ((lane >> 3) & 1);
          tc::ldmatrix_x4(a_frag, s_mine + row * kPitch + ks * 16 + 8 * (lane >> 4));
          tc::mma_16816<scalar_t>(acc[ks & 1][m], a_frag, w_frag[ks], acc[ks & 1][m]);
        }
        __syncwarp();  // every lane's ldmatrix done before the next tile overwrites the slice
      }
      // Partial sums (rows = batch, columns = units) to shared memory: d_v of the accumulator
      // is row group + 8 (v >= 2), column 2 tig + (v & 1).
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m >= m_used) break;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
          const int row = m * 16 + group + 8 * (v >> 1), col = 2 * tig + (v & 1);
          s_part[(warp * kRows + row) * 8 + col] = acc[0][m][v] + acc[1][m][v];
        }
      }
    }
    __syncthreads();  // partials complete; also orders last iteration's reads of s_part
                      // The recurrent gradient of the step done in iteration k - 1.
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      if (k == 0 || !cells.has(a, i) || !cells.prev_valid[i]) continue;  // masked: dh unchanged
      const int64_t b = cells.b(i);
      const int u = cells.u(i);
      float sum = 0.0f;
#pragma unroll
      for (int w = 0; w < WARPS; ++w) sum += s_part[(w * kRows + b) * 8 + u];
      cells.add_recurrent(i, sum);
    }
    if (k == T) break;

    // 2. Cell backward of step s = T - 1 - k; 3. dz to the exchange slot k % 2.
    scalar_t* x_out = x_dir + (k & 1) * slot_stride;
    float dzq[kSlots][4];
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      if (!cells.has(a, i)) continue;
      cells.cell_step(i, dzq[i]);
      const int64_t b = cells.b(i);
      const int u = cells.u(i);
#pragma unroll
      for (int q = 0; q < 4; ++q)
        x_out[b * K + c * 4 * U + q * U + u] = static_cast<scalar_t>(dzq[i][q]);
    }
    __syncthreads();  // every dz row of the CTA written (and every read of s_part done)
    if (tid == 0) tc::st_release_gpu(flags + c, static_cast<unsigned>(k + 1));
    cells.store_dz_and_load_next(a, k, dzq);
  }
  cells.finish(a);
}

template <typename scalar_t, int I = 0>
void launch_config(const TcBackwardArgs<scalar_t>& a, const TcBackwardPlan& plan,
                   cudaStream_t stream) {
  if constexpr (I < kTcBackwardConfigCount) {
    if (plan.config != I) return launch_config<scalar_t, I + 1>(a, plan, stream);
    constexpr TcBackwardConfig cfg = kTcBackwardConfigs[I];
    auto* kernel = &tc_backward_kernel<scalar_t, cfg.warps, cfg.ksteps, cfg.mt>;
    const dim3 grid(static_cast<unsigned>(a.D * plan.ctas)), block(cfg.warps * 32);
    TcBackwardArgs<scalar_t> args = a;
#if defined(LSTM_FUSED_CUDA_EMULATION)
    (void)stream;
    lstm_fused_emulation::launch_cooperative(kernel, grid, block, plan.smem, args);
#else
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(plan.smem)));
    void* params[] = {&args};
    C10_CUDA_CHECK(cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block,
                                               params, plan.smem, stream));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
  }
}

// Whether one CTA of configuration I fits on an SM (registers, shared memory), by the
// occupancy calculator; a GPU only.
template <typename scalar_t, int I = 0>
int ctas_per_sm(const TcBackwardPlan& plan) {
  if constexpr (I < kTcBackwardConfigCount) {
    if (plan.config != I) return ctas_per_sm<scalar_t, I + 1>(plan);
#if defined(LSTM_FUSED_CUDA_EMULATION)
    return 1;
#else
    constexpr TcBackwardConfig cfg = kTcBackwardConfigs[I];
    auto* kernel = &tc_backward_kernel<scalar_t, cfg.warps, cfg.ksteps, cfg.mt>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(plan.smem)));
    int per_sm = 0;
    C10_CUDA_CHECK(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, cfg.warps * 32, plan.smem));
    return per_sm;
#endif
  }
  return 0;
}

}  // namespace tc_backward_detail

template <typename scalar_t>
TcBackwardPlan plan_tc_backward_device(int device, int64_t B, int64_t H, int64_t D, int64_t P) {
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)device;
  const int64_t sms = 64;                // every emulated test grid fits
  const size_t smem_optin = 227 * 1024;  // an sm_90's opt-in limit
  const bool cooperative = true;
#else
  int sms_i = 0, optin_i = 0, coop = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms_i, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin_i, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  const int64_t sms = sms_i;
  const size_t smem_optin = static_cast<size_t>(optin_i);
  const bool cooperative = coop != 0;
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) {
    TcBackwardPlan p;
    p.refusal = "the device is older than sm_80 (no bf16 mma.sync)";
    return p;
  }
#endif
  TcBackwardPlan plan = plan_tc_backward(B, H, D, P, sizeof(scalar_t), sms, smem_optin);
  if (plan.config < 0) return plan;
  if (!cooperative) {
    plan.config = -1;
    plan.refusal = "the device does not support cooperative launches (co-resident CTAs)";
  } else if (tc_backward_detail::ctas_per_sm<scalar_t>(plan) < 1) {
    plan.config = -1;
    plan.refusal =
        "a CTA of the chosen configuration does not fit on an SM (registers or "
        "shared memory)";
  }
  return plan;
}

template <typename scalar_t>
void launch_tc_backward(const TcBackwardArgs<scalar_t>& a, const TcBackwardPlan& plan,
                        cudaStream_t stream) {
  tc_backward_detail::launch_config<scalar_t>(a, plan, stream);
}

#define LSTM_FUSED_INSTANTIATE_TC_BACKWARD(T_)                                                  \
  template TcBackwardPlan plan_tc_backward_device<T_>(int, int64_t, int64_t, int64_t, int64_t); \
  template void launch_tc_backward<T_>(const TcBackwardArgs<T_>&, const TcBackwardPlan&,        \
                                       cudaStream_t);

}  // namespace cuda
}  // namespace lstm_fused
