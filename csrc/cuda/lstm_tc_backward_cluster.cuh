// Tensor-core backward time loop with thread-block clusters (sm_90 and newer; bfloat16 and
// float16, float accumulation): the 2-D split of the recurrent product, the reverse loop of
// every direction in one cluster launch, no grid barrier. Arguments: TcBackwardArgs
// (lstm_tc_backward.h; units = UC, ctas = P * C, k_total = C * Kq); plan and work split:
// lstm_tc_backward_cluster_plan.h; the cell step and its operands: lstm_tc_backward.cuh
// (same per-element code as the 1-D loop); primitives: tc_primitives.cuh.
//
// CTA (p, q) = (cluster, rank) of direction d. Iteration k = 0 .. T - 1 handles forward step
// s = T - 1 - k (time t = s in direction 0, T - 1 - s in direction 1):
//   1. (k > 0) partial recurrent gradient over row group q: each warp waits (ld.acquire.gpu)
//      for the rank-q CTAs of the clusters that produced its K slice of iteration k - 1, stages
//      the slice (cp.async), multiplies it (ldmatrix + mma.sync, A = dz rows x K, B = W_hh
//      (K x 8 units) per n8 tile) into NT accumulator tiles; the warps' partials are summed in
//      shared memory into the CTA's partial (16 mt x UP), buffer k % 2;
//   2. one cluster barrier; each thread sums, for its (b, owned unit), the C partials of its
//      cluster (distributed shared memory loads from every rank): dh_rec of its units;
//   3. cell backward of its UC units at step s, dz rows to the exchange slot k % 2, then, after
//      __syncthreads, st.release.gpu of flag = k + 1; dz is stored to the output after the flag.
// Iteration T does steps 1-2 only, for the gradient of the initial state.
//
// Why the buffers need no more barriers: the CTA partial of iteration k (buffer k % 2) is read
// by the cluster after the iteration-k barrier; it is rewritten in iteration k + 2, after the
// iteration-(k + 1) barrier, which every thread of the cluster passes only once its iteration-k
// reads are done. The exchange slot k % 2 a CTA writes in iteration k held iteration k - 2's
// rows, which the rank-q CTAs of every cluster (exactly the consumers of its rows) read in
// iteration k - 1; the CTA has seen those CTAs' flags k (its warps' K slices cover every
// cluster's rank-q CTA), raised after their iteration k - 1. The warps' partials are rewritten
// in iteration k + 1 after the iteration-k cluster barrier, which follows their reads.
// Kernels end with a cluster barrier: no CTA exits while another reads its shared memory.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cuda/lstm_cuda_runtime.h"
#include "cuda/lstm_tc_backward.cuh"
#include "cuda/lstm_tc_backward_cluster.h"
#include "cuda/tc_primitives.cuh"
#include "lstm_cell_math.h"

namespace lstm_fused {
namespace cuda {
namespace tc_cluster_detail {

using tc_backward_detail::bits16;
using tc_backward_detail::CellSlots;

// grid: D * ctas CTAs of WARPS * 32 threads in clusters of CL (a.ctas = P * CL), all
// resident, dynamic shared memory tc_cluster_smem_bytes(config).
template <typename scalar_t, int CL, int WARPS, int KSTEPS, int NT, int MT>
__global__ void __launch_bounds__(WARPS * 32, 1)
    tc_backward_cluster_kernel(TcBackwardArgs<scalar_t> a) {
#if LSTM_FUSED_TC_HAS_CLUSTERS
  constexpr int kThreads = WARPS * 32, kSlice = KSTEPS * 16, kRows = 16 * MT;
  constexpr int kKq = WARPS * kSlice, kUp = 8 * NT;
  constexpr int kPitch = tc_cluster_pitch(KSTEPS);
  LSTM_FUSED_DYNAMIC_SHARED(smem_raw);
  uint16_t* s_dz = reinterpret_cast<uint16_t*>(smem_raw);  // (WARPS, 16, kPitch)
  float* s_part = reinterpret_cast<float*>(smem_raw + static_cast<size_t>(WARPS) * 16 * kPitch *
                                                          sizeof(uint16_t));  // (WARPS, kRows, kUp)
  float* s_cta = s_part + WARPS * kRows * kUp;  // (2, kRows, kUp): the CTA's partial dh

  const int64_t T = a.T, B = a.B, H = a.H, D = a.D, G = 4 * H;
  const int UC = a.units, ctas = a.ctas, K = a.k_total;
  constexpr int C = CL;  // == cluster_nctarank()
  const int q = static_cast<int>(tc::cluster_ctarank());
  const int P = ctas / C;
  const int d = static_cast<int>(blockIdx.x) / ctas, c = static_cast<int>(blockIdx.x) % ctas;
  const int p = c / C;  // c % C == q: clusters are consecutive blocks
  const int64_t j_cluster = static_cast<int64_t>(p) * C * UC;   // first unit of the cluster
  const int64_t u0 = j_cluster + static_cast<int64_t>(q) * UC;  // first owned unit
  const int nu_raw = static_cast<int>(H - u0 < UC ? H - u0 : UC);
  const int nu = nu_raw < 0 ? 0 : nu_raw;  // owned units (0: a padding CTA)
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int group = lane >> 2, tig = lane & 3;

  // W_hh[rows of row group q, units of the cluster] as B fragments of the warp's K slice:
  // position kk of the slice = p' * 4 UC + gate * UC + u -> row gate * H + p' C UC + q UC + u;
  // n8 tile n, column group -> unit j_cluster + 8 n + group.
  uint32_t w_frag[KSTEPS][NT][2];
  {
    const scalar_t* w_d = a.w_hh + d * G * H;
    auto w_bits = [&](int kk, int n) -> uint32_t {
      const int pp = kk / (4 * UC), rem = kk % (4 * UC), gate = rem / UC, u = rem % UC;
      const int64_t row_unit = static_cast<int64_t>(pp) * C * UC + static_cast<int64_t>(q) * UC + u;
      const int64_t col = j_cluster + 8 * n + group;
      if (pp >= P || row_unit >= H || 8 * n + group >= C * UC || col >= H) return 0u;
      return bits16(w_d[(gate * H + row_unit) * H + col]);
    };
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks)
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int kk = warp * kSlice + ks * 16 + 2 * tig + 8 * h;
          w_frag[ks][n][h] = w_bits(kk, n) | (w_bits(kk + 1, n) << 16);
        }
  }
  // The clusters whose rank-q CTA produced the warp's K slice: [p_lo, p_hi).
  const int p_lo = warp * kSlice / (4 * UC);
  const int p_hi_all = ((warp + 1) * kSlice + 4 * UC - 1) / (4 * UC);
  const int p_hi = p_hi_all < P ? p_hi_all : P;

  constexpr int kSlots = (kRows * (kUp / CL) + kThreads - 1) / kThreads;  // >= rows x UC
  CellSlots<scalar_t, kSlots, kThreads> cells;  // this thread's cell elements (1-D kernel's)
  cells.d = d;
  cells.u0 = u0;
  cells.tid = tid;
  cells.nu = nu;
  cells.init(a);

  scalar_t* x_dir = a.dz_exchange + static_cast<int64_t>(d) * kRows * K;  // slot 0, (kRows, K)
  const int64_t slot_stride = D * kRows * K;
  unsigned* flags = a.flags + static_cast<int64_t>(d) * ctas;  // by CTA index p * C + q
  uint16_t* s_mine = s_dz + warp * 16 * kPitch;
  const int m_used = static_cast<int>((B + 15) / 16);

  tc::cluster_sync();  // every CTA of the cluster runs before its shared memory is read remotely
  for (int64_t k = 0; k <= T; ++k) {
    if (k > 0) {
      // 1. Partial dh over row group q from iteration k - 1's dz rows (slot (k - 1) % 2).
      for (int pp = p_lo + lane; pp < p_hi; pp += 32)
        tc::wait_geq_acquire(flags + pp * C + q, static_cast<unsigned>(k));
      __syncwarp();
      const uint16_t* src = reinterpret_cast<const uint16_t*>(x_dir + ((k - 1) & 1) * slot_stride) +
                            q * kKq + warp * kSlice;
      float acc[MT][NT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int v = 0; v < 4; ++v) acc[m][n][v] = 0.0f;
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
          uint32_t a_frag[4];
          const int row = (lane & 7) + 8 * ((lane >> 3) & 1);
          tc::ldmatrix_x4(a_frag, s_mine + row * kPitch + ks * 16 + 8 * (lane >> 4));
#pragma unroll
          for (int n = 0; n < NT; ++n)
            tc::mma_16816<scalar_t>(acc[m][n], a_frag, w_frag[ks][n], acc[m][n]);
        }
        __syncwarp();  // every lane's ldmatrix done before the next tile overwrites the slice
      }
      // The warp's partials (rows = batch, columns = the cluster's units): d_v of tile n is
      // row group + 8 (v >= 2), column 8 n + 2 tig + (v & 1).
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        if (m >= m_used) break;
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int v = 0; v < 4; ++v) {
            const int row = m * 16 + group + 8 * (v >> 1), col = 8 * n + 2 * tig + (v & 1);
            s_part[(warp * kRows + row) * kUp + col] = acc[m][n][v];
          }
      }
      __syncthreads();
      // The CTA's partial, buffer k % 2 (rows past the used m16 tiles are never read).
      float* cta_out = s_cta + (k & 1) * kRows * kUp;
      for (int e = tid; e < m_used * 16 * kUp; e += kThreads) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) sum += s_part[w * kRows * kUp + e];
        cta_out[e] = sum;
      }
      // 2. The cluster's partials of the owned units, through distributed shared memory.
      tc::cluster_sync();
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        if (!cells.has(a, i) || !cells.prev_valid[i]) continue;  // masked: dh passes unchanged
        const int64_t b = cells.b(i);
        const int col = q * UC + cells.u(i);
        float sum = 0.0f;
        for (int r = 0; r < C; ++r) {
          const int rank = (q + r) % C;  // staggered: the ranks are not all read at once
          sum += tc::ld_shared_cluster_f32(
              tc::map_shared_cluster(cta_out + b * kUp + col, static_cast<unsigned>(rank)));
        }
        cells.add_recurrent(i, sum);
      }
    }
    if (k == T) break;

    // 3. Cell backward of step s = T - 1 - k; dz to the exchange slot k % 2.
    scalar_t* x_out = x_dir + (k & 1) * slot_stride + q * kKq + p * 4 * UC;
    float dzq[kSlots][4];
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      if (!cells.has(a, i)) continue;
      cells.cell_step(i, dzq[i]);
      const int64_t b = cells.b(i);
      const int u = cells.u(i);
#pragma unroll
      for (int g = 0; g < 4; ++g) x_out[b * K + g * UC + u] = static_cast<scalar_t>(dzq[i][g]);
    }
    __syncthreads();  // every dz row of the CTA written
    if (tid == 0) tc::st_release_gpu(flags + c, static_cast<unsigned>(k + 1));
    cells.store_dz_and_load_next(a, k, dzq);
  }
  cells.finish(a);
  tc::cluster_sync();  // no CTA exits while another still reads its shared memory
#else
  (void)a;
  __trap();  // built for an architecture without clusters: the host never launches it there
#endif
}

template <typename scalar_t, int I = 0>
void launch_config(const TcBackwardArgs<scalar_t>& a, const TcClusterPlan& plan,
                   cudaStream_t stream) {
  if constexpr (I < kTcClusterConfigCount) {
    if (plan.config != I) return launch_config<scalar_t, I + 1>(a, plan, stream);
    constexpr TcClusterConfig cfg = kTcClusterConfigs[I];
    auto* kernel =
        &tc_backward_cluster_kernel<scalar_t, cfg.cluster, cfg.warps, cfg.ksteps, cfg.nt, cfg.mt>;
    const dim3 grid(static_cast<unsigned>(a.D * plan.ctas)), block(cfg.warps * 32);
    TcBackwardArgs<scalar_t> args = a;
#if defined(LSTM_FUSED_CUDA_EMULATION)
    (void)stream;
    lstm_fused_emulation::launch_cluster(kernel, grid, block, static_cast<unsigned>(cfg.cluster),
                                         plan.smem, args);
#else
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(plan.smem)));
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = plan.smem;
    config.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(cfg.cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    config.attrs = attr;
    config.numAttrs = 1;
    C10_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, args));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
  }
}

// How many clusters of configuration I can be resident at once (the occupancy calculator's
// cudaOccupancyMaxActiveClusters); a GPU only.
template <typename scalar_t, int I = 0>
int max_active_clusters(const TcClusterPlan& plan) {
  if constexpr (I < kTcClusterConfigCount) {
    if (plan.config != I) return max_active_clusters<scalar_t, I + 1>(plan);
#if defined(LSTM_FUSED_CUDA_EMULATION)
    return 1 << 20;
#else
    constexpr TcClusterConfig cfg = kTcClusterConfigs[I];
    auto* kernel =
        &tc_backward_cluster_kernel<scalar_t, cfg.cluster, cfg.warps, cfg.ksteps, cfg.nt, cfg.mt>;
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(plan.smem)));
    cudaLaunchConfig_t config = {};
    config.gridDim = dim3(static_cast<unsigned>(plan.ctas));
    config.blockDim = dim3(cfg.warps * 32);
    config.dynamicSmemBytes = plan.smem;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(cfg.cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    config.attrs = attr;
    config.numAttrs = 1;
    int clusters = 0;
    C10_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&clusters, kernel, &config));
    return clusters;
#endif
  }
  return 0;
}

}  // namespace tc_cluster_detail

template <typename scalar_t>
void launch_tc_backward_cluster(const TcBackwardArgs<scalar_t>& a, const TcClusterPlan& plan,
                                cudaStream_t stream) {
  tc_cluster_detail::launch_config<scalar_t>(a, plan, stream);
}

template <typename scalar_t>
TcClusterPlan plan_tc_backward_cluster_device(int device, int64_t B, int64_t H, int64_t D,
                                              int64_t P) {
#if defined(LSTM_FUSED_CUDA_EMULATION)
  (void)device;
  const int64_t sms = 64;                // every emulated test grid fits
  const size_t smem_optin = 227 * 1024;  // an sm_90's opt-in limit
#else
  int sms_i = 0, optin_i = 0, major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms_i, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin_i, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 9) {
    TcClusterPlan p;
    p.refusal = "the device is older than sm_90 (no thread-block clusters)";
    return p;
  }
  const int64_t sms = sms_i;
  const size_t smem_optin = static_cast<size_t>(optin_i);
#endif
  TcClusterPlan plan = plan_tc_backward_cluster(B, H, D, P, sizeof(scalar_t), sms, smem_optin);
  if (plan.config < 0) return plan;
  const int resident = tc_cluster_detail::max_active_clusters<scalar_t>(plan);
  if (resident < D * plan.clusters) {
    plan.config = -1;
    plan.refusal = "needs " + std::to_string(D * plan.clusters) + " clusters of " +
                   std::to_string(plan.cluster) + " CTAs resident at once, the device holds " +
                   std::to_string(resident);
  }
  return plan;
}

#define LSTM_FUSED_INSTANTIATE_TC_BACKWARD_CLUSTER(T_)                                          \
  template TcClusterPlan plan_tc_backward_cluster_device<T_>(int, int64_t, int64_t, int64_t,    \
                                                             int64_t);                          \
  template void launch_tc_backward_cluster<T_>(const TcBackwardArgs<T_>&, const TcClusterPlan&, \
                                               cudaStream_t);

}  // namespace cuda
}  // namespace lstm_fused
