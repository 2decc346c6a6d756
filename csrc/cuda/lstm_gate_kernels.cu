// Gate-kernel path of the CUDA LSTM: the fused elementwise kernels launched once per time step,
// between the recurrent GEMMs that lstm_layer_cuda.cpp runs (shapes: lstm_cuda_kernels.h).
//
// One thread handles VEC consecutive hidden units j of one (direction d, batch row b): every
// operand row is read with 16-byte vector loads when H is a multiple of VEC and the pointers are
// 16-byte aligned (VEC = 4 floats or 8 halves), one element at a time otherwise. The math is
// csrc/lstm_cell_math.h in float (fp32 accumulation for half and bfloat16; double for double,
// which exists so that torch.autograd.gradcheck can run on the CUDA kernels).
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/lstm_cuda_kernels.h"
#include "cuda/lstm_cuda_runtime.h"
#include "lstm_cell_math.h"

namespace lstm_fused {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}

template <int N, typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& v) {
  *reinterpret_cast<Pack<T, N>*>(p) = v;
}

template <int N, typename T>
__device__ __forceinline__ Pack<T, N> zero_pack() {
  Pack<T, N> z;
#pragma unroll
  for (int k = 0; k < N; ++k) z.v[k] = T(0.0f);
  return z;
}

// Time index of direction d at forward step `step`.
__device__ __forceinline__ int64_t step_time(int64_t d, int64_t step, int64_t T) {
  return d == 0 ? step : T - 1 - step;
}

// Whether step t (0 <= t < T) of row b is valid. Any lengths[b] is memory-safe here (below 0
// acts as 0, above T as T); 0 <= lengths[b] <= T is the caller's contract, checked on the host
// by lstm_fused.functional (not in the host code: that would be a device synchronisation).
__device__ __forceinline__ bool row_valid(const int64_t* lengths, int64_t b, int64_t t) {
  return lengths == nullptr || t < lengths[b];
}

// Resets (lstm_layer_args.h), resets (T, B) or nullptr: whether row b of direction d starts
// step t from its initial state (t valid). Direction 0: resets[t] (t > 0); direction 1, which
// runs t downwards: resets[t + 1] where t + 1 is valid.
__device__ __forceinline__ bool starts_fresh(const bool* resets, const int64_t* lengths, int64_t d,
                                             int64_t b, int64_t t, int64_t T, int64_t B) {
  if (resets == nullptr) return false;
  if (d == 0) return t > 0 && resets[t * B + b];
  return t + 1 < T && resets[(t + 1) * B + b] && row_valid(lengths, b, t + 1);
}

// Whether the step after t of direction d (t + 1 forward, t - 1 backward) starts afresh.
__device__ __forceinline__ bool next_fresh(const bool* resets, const int64_t* lengths, int64_t d,
                                           int64_t b, int64_t t, int64_t T, int64_t B) {
  if (resets == nullptr) return false;
  if (d == 0) return t + 1 < T && resets[(t + 1) * B + b] && row_valid(lengths, b, t + 1);
  return t > 0 && resets[t * B + b] && row_valid(lengths, b, t);
}

unsigned int blocks_for(int64_t n) {
  return static_cast<unsigned int>((n + kThreads - 1) / kThreads);
}

// grid: D * B * H / VEC threads.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads) gate_forward_kernel(GateForwardArgs<scalar_t> a) {
  using P = Pack<scalar_t, VEC>;
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t HV = a.H / VEC;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= a.D * a.B * HV) return;
  const int64_t j = (idx % HV) * VEC;
  const int64_t b = (idx / HV) % a.B;
  const int64_t d = idx / (HV * a.B);
  const int64_t H = a.H, G = 4 * H, B = a.B, T = a.T, D = a.D;
  const int64_t t = step_time(d, a.step, T);

  scalar_t* c_state = a.c_state + (d * B + b) * H + j;
  scalar_t* gates = a.gates + ((d * T + t) * B + b) * G + j;
  scalar_t* cells = a.cells + ((d * T + t) * B + b) * H + j;
  scalar_t* y = a.y == nullptr ? nullptr : a.y + (t * B + b) * D * H + d * H + j;

  const P cp = load_pack<VEC>(c_state);
  if (!row_valid(a.lengths, b, t)) {  // padding: state carried, gates and output zero
    const P zero = zero_pack<VEC, scalar_t>();
#pragma unroll
    for (int q = 0; q < 4; ++q) store_pack<VEC>(gates + q * H, zero);
    store_pack<VEC>(cells, cp);
    if (y != nullptr) store_pack<VEC>(y, zero);
    return;
  }
  const scalar_t* zr = a.z_rec + (d * B + b) * G + j;
  const scalar_t* zx = a.gx + ((t * B + b) * D + d) * G + j;
  P zrq[4], zxq[4], pw[3];
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    zrq[q] = load_pack<VEC>(zr + q * H);
    zxq[q] = load_pack<VEC>(zx + q * H);
  }
  if (a.peep != nullptr) {
#pragma unroll
    for (int q = 0; q < 3; ++q) pw[q] = load_pack<VEC>(a.peep + (d * 3 + q) * H + j);
  }
  P out_g[4], out_c, out_h;
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    acc_t z[4];
#pragma unroll
    for (int q = 0; q < 4; ++q)
      z[q] = static_cast<acc_t>(zrq[q].v[k]) + static_cast<acc_t>(zxq[q].v[k]);
    CellPeep<acc_t> peep{acc_t(0), acc_t(0), acc_t(0)};
    if (a.peep != nullptr)
      peep = {static_cast<acc_t>(pw[0].v[k]), static_cast<acc_t>(pw[1].v[k]),
              static_cast<acc_t>(pw[2].v[k])};
    const CellForward<acc_t> r =
        cell_forward<acc_t>(z[0], z[1], z[2], z[3], static_cast<acc_t>(cp.v[k]), peep);
    out_g[0].v[k] = static_cast<scalar_t>(r.i);
    out_g[1].v[k] = static_cast<scalar_t>(r.f);
    out_g[2].v[k] = static_cast<scalar_t>(r.g);
    out_g[3].v[k] = static_cast<scalar_t>(r.o);
    out_c.v[k] = static_cast<scalar_t>(r.c);
    out_h.v[k] = static_cast<scalar_t>(r.h);
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) store_pack<VEC>(gates + q * H, out_g[q]);
  store_pack<VEC>(cells, out_c);
  if (y != nullptr) store_pack<VEC>(y, out_h);
  if (next_fresh(a.resets, a.lengths, d, b, t, T, B)) {  // the next step starts from h0, c0
    store_pack<VEC>(c_state, load_pack<VEC>(a.c0 + (d * B + b) * H + j));
    if (y != nullptr) out_h = load_pack<VEC>(a.h0 + (d * B + b) * H + j);  // else: proj_store
  } else {
    store_pack<VEC>(c_state, out_c);
  }
  store_pack<VEC>(a.h_out + (d * B + b) * H + j, out_h);
}

// grid: D * B * H / VEC threads. Launch bounds (kThreads, 1): without it ptxas for sm_80 capped
// the half-precision vector instantiation at 64 registers and spilled (2 bytes); with it, it
// takes ~110 registers (2 blocks per SM instead of 4: to be weighed on a GPU).
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kThreads, 1) gate_backward_kernel(GateBackwardArgs<scalar_t> a) {
  using P = Pack<scalar_t, VEC>;
  using acc_t = cell_acc_t<scalar_t>;
  const int64_t HV = a.H / VEC;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= a.D * a.B * HV) return;
  const int64_t j = (idx % HV) * VEC;
  const int64_t b = (idx / HV) % a.B;
  const int64_t d = idx / (HV * a.B);
  const int64_t H = a.H, G = 4 * H, B = a.B, T = a.T, D = a.D;
  const int64_t t = step_time(d, a.step, T);

  scalar_t* dz = a.dz + ((t * B + b) * D + d) * G + j;
  scalar_t* dz_step = a.dz_step + (d * B + b) * G + j;
  if (!row_valid(a.lengths, b, t)) {  // padding: no gradient flows through this step
    const P zero = zero_pack<VEC, scalar_t>();
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      store_pack<VEC>(dz + q * H, zero);
      store_pack<VEC>(dz_step + q * H, zero);
    }
    return;
  }
  // c_{t-1}: c0 at the first step of the direction, else the cell of the previous time.
  const bool first = a.step == 0 || starts_fresh(a.resets, a.lengths, d, b, t, T, B);
  const int64_t t_prev = d == 0 ? t - 1 : t + 1;
  const scalar_t* c_prev_p =
      first ? a.c0 + (d * B + b) * H + j : a.cells + ((d * T + t_prev) * B + b) * H + j;
  // The step processed before (t + 1 in direction 0) started afresh: the gradient carried
  // from it belongs to (h0, c0), and none crosses to step t.
  const bool cut = next_fresh(a.resets, a.lengths, d, b, t, T, B);
  const scalar_t* g_p = a.gates + ((d * T + t) * B + b) * G + j;
  P gq[4], pw[3];
#pragma unroll
  for (int q = 0; q < 4; ++q) gq[q] = load_pack<VEC>(g_p + q * H);
  const P c = load_pack<VEC>(a.cells + ((d * T + t) * B + b) * H + j);
  const P cp = load_pack<VEC>(c_prev_p);
  scalar_t* dc_p = a.dc_state + (d * B + b) * H + j;
  P dc = load_pack<VEC>(dc_p);
  P dh1, dh2;
  if (a.dh != nullptr) {
    dh1 = load_pack<VEC>(a.dh + (d * B + b) * H + j);
    dh2 = zero_pack<VEC, scalar_t>();
  } else {
    dh1 = load_pack<VEC>(a.grad_y + (t * B + b) * D * H + d * H + j);
    dh2 = load_pack<VEC>(a.dh_state + (d * B + b) * H + j);
  }
  if (cut) {
    const int64_t o = (d * B + b) * H + j;
    P sum_c = load_pack<VEC>(a.dc0_sum + o), sum_h;
    if (a.dh == nullptr) sum_h = load_pack<VEC>(a.dh0_sum + o);
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      sum_c.v[k] =
          static_cast<scalar_t>(static_cast<acc_t>(sum_c.v[k]) + static_cast<acc_t>(dc.v[k]));
      if (a.dh == nullptr)
        sum_h.v[k] =
            static_cast<scalar_t>(static_cast<acc_t>(sum_h.v[k]) + static_cast<acc_t>(dh2.v[k]));
    }
    store_pack<VEC>(a.dc0_sum + o, sum_c);
    if (a.dh == nullptr) store_pack<VEC>(a.dh0_sum + o, sum_h);
    dc = zero_pack<VEC, scalar_t>();
    dh2 = zero_pack<VEC, scalar_t>();
  }
  if (a.peep != nullptr) {
#pragma unroll
    for (int q = 0; q < 3; ++q) pw[q] = load_pack<VEC>(a.peep + (d * 3 + q) * H + j);
  }
  P out_dz[4], out_dc;
#pragma unroll
  for (int k = 0; k < VEC; ++k) {
    CellPeep<acc_t> peep{acc_t(0), acc_t(0), acc_t(0)};
    if (a.peep != nullptr)
      peep = {static_cast<acc_t>(pw[0].v[k]), static_cast<acc_t>(pw[1].v[k]),
              static_cast<acc_t>(pw[2].v[k])};
    const acc_t dh = static_cast<acc_t>(dh1.v[k]) + static_cast<acc_t>(dh2.v[k]);
    const CellBackward<acc_t> r = cell_backward<acc_t>(
        static_cast<acc_t>(gq[0].v[k]), static_cast<acc_t>(gq[1].v[k]),
        static_cast<acc_t>(gq[2].v[k]), static_cast<acc_t>(gq[3].v[k]), static_cast<acc_t>(c.v[k]),
        static_cast<acc_t>(cp.v[k]), dh, static_cast<acc_t>(dc.v[k]), peep);
    out_dz[0].v[k] = static_cast<scalar_t>(r.dz_i);
    out_dz[1].v[k] = static_cast<scalar_t>(r.dz_f);
    out_dz[2].v[k] = static_cast<scalar_t>(r.dz_g);
    out_dz[3].v[k] = static_cast<scalar_t>(r.dz_o);
    out_dc.v[k] = static_cast<scalar_t>(r.dc_prev);
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    store_pack<VEC>(dz + q * H, out_dz[q]);
    store_pack<VEC>(dz_step + q * H, out_dz[q]);
  }
  store_pack<VEC>(dc_p, out_dc);
}

// grid: D * B * P threads (small tensors: one element per thread).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    proj_store_kernel(const scalar_t* r, scalar_t* h_state, scalar_t* y, const int64_t* lengths,
                      int64_t T, int64_t B, int64_t P, int64_t D, int64_t step, const bool* resets,
                      const scalar_t* h0) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= D * B * P) return;
  const int64_t k = idx % P, b = (idx / P) % B, d = idx / (P * B);
  const int64_t t = step_time(d, step, T);
  scalar_t* y_p = y + (t * B + b) * D * P + d * P + k;
  if (row_valid(lengths, b, t)) {
    h_state[idx] = next_fresh(resets, lengths, d, b, t, T, B) ? h0[idx] : r[idx];
    *y_p = r[idx];
  } else {
    *y_p = scalar_t(0.0f);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    proj_grad_input_kernel(const scalar_t* grad_y, const scalar_t* dh_state, const int64_t* lengths,
                           scalar_t* dr, scalar_t* dR, int64_t T, int64_t B, int64_t P, int64_t D,
                           int64_t step, const bool* resets, scalar_t* dh0_sum) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= D * B * P) return;
  const int64_t k = idx % P, b = (idx / P) % B, d = idx / (P * B);
  const int64_t t = step_time(d, step, T);
  using acc_t = cell_acc_t<scalar_t>;
  scalar_t v = scalar_t(0.0f);
  if (row_valid(lengths, b, t)) {
    acc_t carried = static_cast<acc_t>(dh_state[idx]);
    if (next_fresh(resets, lengths, d, b, t, T, B)) {  // no gradient crosses a reset
      dh0_sum[idx] = static_cast<scalar_t>(static_cast<acc_t>(dh0_sum[idx]) + carried);
      carried = acc_t(0);
    }
    v = static_cast<scalar_t>(static_cast<acc_t>(grad_y[(t * B + b) * D * P + d * P + k]) +
                              carried);
  }
  dr[idx] = v;
  dR[((d * T + t) * B + b) * P + k] = v;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    masked_copy_kernel(const scalar_t* src, scalar_t* dst, const int64_t* lengths, int64_t T,
                       int64_t B, int64_t N, int64_t D, int64_t step) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= D * B * N) return;
  const int64_t b = (idx / N) % B, d = idx / (N * B);
  if (row_valid(lengths, b, step_time(d, step, T))) dst[idx] = src[idx];
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per 16-byte vector when every row offset and pointer allows it, else 1.
template <typename scalar_t>
constexpr int pack_width() {
  return static_cast<int>(16 / sizeof(scalar_t));
}

}  // namespace

template <typename scalar_t>
void launch_gate_forward(const GateForwardArgs<scalar_t>& a, cudaStream_t stream) {
  constexpr int V = pack_width<scalar_t>();
  const bool vec = a.H % V == 0 && aligned16(a.z_rec) && aligned16(a.gx) && aligned16(a.peep) &&
                   aligned16(a.c_state) && aligned16(a.gates) && aligned16(a.cells) &&
                   aligned16(a.h_out) && aligned16(a.y) && aligned16(a.h0) && aligned16(a.c0);
  const int64_t n = a.D * a.B * (vec ? a.H / V : a.H);
  if (n == 0) return;
  if (vec)
    LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, gate_forward_kernel<scalar_t, V>)(a);
  else LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, gate_forward_kernel<scalar_t, 1>)(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_gate_backward(const GateBackwardArgs<scalar_t>& a, cudaStream_t stream) {
  constexpr int V = pack_width<scalar_t>();
  const bool vec = a.H % V == 0 && aligned16(a.gates) && aligned16(a.cells) && aligned16(a.c0) &&
                   aligned16(a.peep) && aligned16(a.dh) && aligned16(a.grad_y) &&
                   aligned16(a.dh_state) && aligned16(a.dc_state) && aligned16(a.dz) &&
                   aligned16(a.dz_step) && aligned16(a.dh0_sum) && aligned16(a.dc0_sum);
  const int64_t n = a.D * a.B * (vec ? a.H / V : a.H);
  if (n == 0) return;
  if (vec)
    LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, gate_backward_kernel<scalar_t, V>)(a);
  else LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, gate_backward_kernel<scalar_t, 1>)(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_proj_store(const scalar_t* r, scalar_t* h_state, scalar_t* y, const int64_t* lengths,
                       int64_t T, int64_t B, int64_t P, int64_t D, int64_t step, const bool* resets,
                       const scalar_t* h0, cudaStream_t stream) {
  const int64_t n = D * B * P;
  if (n == 0) return;
  LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, proj_store_kernel<scalar_t>)(
      r, h_state, y, lengths, T, B, P, D, step, resets, h0);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_proj_grad_input(const scalar_t* grad_y, const scalar_t* dh_state,
                            const int64_t* lengths, scalar_t* dr, scalar_t* dR, int64_t T,
                            int64_t B, int64_t P, int64_t D, int64_t step, const bool* resets,
                            scalar_t* dh0_sum, cudaStream_t stream) {
  const int64_t n = D * B * P;
  if (n == 0) return;
  LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, proj_grad_input_kernel<scalar_t>)(
      grad_y, dh_state, lengths, dr, dR, T, B, P, D, step, resets, dh0_sum);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_masked_copy(const scalar_t* src, scalar_t* dst, const int64_t* lengths, int64_t T,
                        int64_t B, int64_t N, int64_t D, int64_t step, cudaStream_t stream) {
  const int64_t n = D * B * N;
  if (n == 0) return;
  LSTM_FUSED_LAUNCH(blocks_for(n), kThreads, 0, stream, masked_copy_kernel<scalar_t>)(
      src, dst, lengths, T, B, N, D, step);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

#define LSTM_FUSED_INSTANTIATE_GATES(T_)                                                          \
  template void launch_gate_forward<T_>(const GateForwardArgs<T_>&, cudaStream_t);                \
  template void launch_gate_backward<T_>(const GateBackwardArgs<T_>&, cudaStream_t);              \
  template void launch_proj_store<T_>(const T_*, T_*, T_*, const int64_t*, int64_t, int64_t,      \
                                      int64_t, int64_t, int64_t, const bool*, const T_*,          \
                                      cudaStream_t);                                              \
  template void launch_proj_grad_input<T_>(const T_*, const T_*, const int64_t*, T_*, T_*,        \
                                           int64_t, int64_t, int64_t, int64_t, int64_t,           \
                                           const bool*, T_*, cudaStream_t);                       \
  template void launch_masked_copy<T_>(const T_*, T_*, const int64_t*, int64_t, int64_t, int64_t, \
                                       int64_t, int64_t, cudaStream_t);

LSTM_FUSED_INSTANTIATE_GATES(float)
LSTM_FUSED_INSTANTIATE_GATES(double)
LSTM_FUSED_INSTANTIATE_GATES(c10::Half)
LSTM_FUSED_INSTANTIATE_GATES(c10::BFloat16)
#undef LSTM_FUSED_INSTANTIATE_GATES

}  // namespace cuda
}  // namespace lstm_fused
