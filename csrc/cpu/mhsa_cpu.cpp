// CPU kernels of the multi-head self-attention core (schemas: csrc/attention_schemas.h).
//
// One (batch row b, head n) pair at a time, parallel over the B * N pairs. With len = lengths[b]
// valid keys, a block of query rows (all T rows when T <= kRowBlock) goes through GEMMs (the
// sgemm_ / dgemm_ of the BLAS PyTorch links, else at::addmm_) and a per-thread score buffer of
// rows x len, so at most one block of one head's score matrix exists at a time:
//   S = scale Q K[:len]^T,  P = row softmax of S,  lse_i = log sum_j exp(S_ij),  O = P V[:len]
// Only the rows t < len of K and V are read (the GEMMs stop at len), so whatever the padding
// holds (NaN, inf) cannot reach the result; len = 0 gives O = 0 and lse = -inf.
// Backward recomputes P from the saved lse, block by block of query rows:
//   P = exp(S - lse),  D_i = dO_i . O_i,  dV += P^T dO,  dP = dO V^T,  dS = P * (dP - D),
//   dQ = scale dS K,  dK += scale dS^T Q;  rows t >= len of dK and dV are 0.
// Attention dropout (training): O = (P * Z) V with Z = keep * keep_scale from the counter-based
// mask of attention_dropout.h; the backward regenerates Z and uses dV += (P * Z)^T dO and
// dS = P * (dP * Z - D) (D = dO . O still holds, O being the dropped-out output).
// The inputs are read in place through their strides (only the last one must be 1), so the
// head split of the (T, B, 3E) projection, a permuted view, costs no copy. float and double
// run on the tensors themselves; half and bfloat16 are converted to float one head at a time
// and the results rounded back.
#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include "cpu/lstm_cell_vec.h"

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/acc_rows.h"
#include "cpu/kernels.h"
#include "attention_dropout.h"
#include "mhsa_args.h"
#include "switches.h"

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h
namespace {

using at::vec::Vectorized;

// Query rows per block: the score buffer is kRowBlock x len per thread.
constexpr int64_t kRowBlock = 256;

// The Fortran BLAS of the BLAS PyTorch is linked with (MKL's on x86 wheels, which export
// these names from libtorch_cpu; at::native::cpublas::gemm is not exported). Weak symbols:
// where the library lacks them they are null and gemm_rm takes at::addmm_ instead.
#if defined(__GNUC__)
#define LSTM_FUSED_HAVE_WEAK_BLAS 1
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}
#endif

template <typename T>
bool have_blas() {
#ifdef LSTM_FUSED_HAVE_WEAK_BLAS
  return std::is_same_v<T, float> ? sgemm_ != nullptr : dgemm_ != nullptr;
#else
  return false;
#endif
}

// The switch cpu_gemm = "aten" (csrc/switches.h) takes the at::addmm_ path even where BLAS is
// there (tests).
bool blas_wanted() { return switches().cpu_gemm != CpuGemm::Aten; }

template <typename T>
at::Tensor matrix_view(const T* p, int64_t rows, int64_t cols, int64_t ld, bool transposed) {
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  if (transposed) return at::from_blob(const_cast<T*>(p), {cols, rows}, {ld, 1}, opts).t();
  return at::from_blob(const_cast<T*>(p), {rows, cols}, {ld, 1}, opts);
}

// Row-major C (M x N, ldc) = alpha op(A) op(B) + beta C with op(A) M x K and op(B) K x N;
// a_t / b_t: A is stored K x M / B is stored N x K (rows ld apart). beta = 0 never reads C.
// BLAS is column-major, where a row-major matrix reads as its transpose, so BLAS is asked for
// C^T = op(B)^T op(A)^T.
template <typename T>
void gemm_rm(bool use_blas, bool a_t, bool b_t, int64_t M, int64_t N, int64_t K, T alpha,
             const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // empty sum (head size 0): C = beta C
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
    return;
  }
#ifdef LSTM_FUSED_HAVE_WEAK_BLAS
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();  // LP64 BLAS: int sizes
  if (use_blas && std::max({M, N, K, lda, ldb, ldc}) <= kIntMax) {
    const char ta = b_t ? 'T' : 'N', tb = a_t ? 'T' : 'N';
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int la = static_cast<int>(ldb), lb = static_cast<int>(lda), lc = static_cast<int>(ldc);
    if constexpr (std::is_same_v<T, float>) {
      sgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    } else {
      dgemm_(&ta, &tb, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
    }
    return;
  }
#endif
  at::Tensor c = matrix_view(C, M, N, ldc, false);
  c.addmm_(matrix_view(A, M, K, lda, a_t), matrix_view(B, K, N, ldb, b_t), beta, alpha);
}

// s = softmax(s) in place over n > 0 entries; returns log sum exp(s).
template <typename T>
T softmax_row(T* s, int64_t n) {
  using V = Vectorized<T>;
  const T m = at::vec::reduce_all<T>([](V a, V b) { return at::vec::maximum(a, b); }, s, n);
  at::vec::map([m](V x) { return (x - V(m)).exp(); }, s, s, n);
  const T sum = at::vec::reduce_all<T>([](V a, V b) { return a + b; }, s, n);
  const T inv = T(1) / sum;
  at::vec::map([inv](V x) { return x * V(inv); }, s, s, n);
  return m + std::log(sum);
}

// A (B, N, T, Dh) tensor read through its strides: head (b, n) row t starts at
// data + b * sb + n * sn + t * st and its Dh elements are adjacent.
template <typename scalar_t>
struct Heads {
  const scalar_t* data;
  int64_t sb, sn, st;
  const scalar_t* head(int64_t b, int64_t n) const { return data + b * sb + n * sn; }
};

// Row-strided access needs a unit last stride and rows that do not overlap; anything else
// (an expanded tensor, a transposed head) is copied once.
at::Tensor rows_readable(const at::Tensor& t) {
  const int64_t T = t.size(2), Dh = t.size(3);
  const bool ok = (Dh <= 1 || t.stride(3) == 1) && (T <= 1 || t.stride(2) >= Dh);
  return ok ? t : t.contiguous();
}

template <typename scalar_t>
Heads<scalar_t> heads_of(const at::Tensor& t) {
  const int64_t st = t.size(2) > 1 ? t.stride(2) : t.size(3);  // any stride is legal for T = 1
  return {t.data_ptr<scalar_t>(), t.stride(0), t.stride(1), std::max<int64_t>(st, 1)};
}

// Per-thread buffers, reused across the heads a thread runs.
template <typename acc_t>
struct Workspace {
  std::vector<acc_t> q, k, v, dout, out, s, dp, o_acc, dq_acc, dk_acc, dv_acc;
  const bool blas = blas_wanted() && have_blas<acc_t>();
};

// Dropout of n attention weights p of one query row (row key of attention_dropout.h):
// p_j *= Z_j; with dp, first dp_j = p_j (dp_j Z_j - delta) (the backward's dS).
template <typename acc_t>
void drop_row(const AttentionDropout& drop, uint32_t key, acc_t* p, int64_t n, acc_t* dp = nullptr,
              acc_t delta = 0) {
  const acc_t kept = static_cast<acc_t>(drop.keep_scale);
  for (int64_t j = 0; j < n; ++j) {
    const acc_t z = drop.keep(key, j) ? kept : acc_t(0);
    if (dp != nullptr) dp[j] = p[j] * (dp[j] * z - delta);
    p[j] *= z;
  }
}

// One head: q, k, v rows (ld apart); out (T, Dh) contiguous; lse (T,). row0: the dropout row
// number of query row 0, (b * N + n) * T.
template <typename scalar_t, typename acc_t>
void forward_head(const scalar_t* q, int64_t ldq_in, const scalar_t* k, int64_t ldk_in,
                  const scalar_t* v, int64_t ldv_in, scalar_t* out, acc_t* lse, int64_t T,
                  int64_t Dh, int64_t len, acc_t scale, const AttentionDropout& drop, int64_t row0,
                  Workspace<acc_t>& ws) {
  if (len == 0) {  // no valid key: zero context, lse = log(0)
    std::fill(out, out + T * Dh, scalar_t(0));
    std::fill(lse, lse + T, -std::numeric_limits<acc_t>::infinity());
    return;
  }
  int64_t ldq, ldk, ldv;
  const acc_t* Q = rows_as_acc(q, ldq_in, T, Dh, ws.q, &ldq);
  const acc_t* K = rows_as_acc(k, ldk_in, len, Dh, ws.k, &ldk);
  const acc_t* V = rows_as_acc(v, ldv_in, len, Dh, ws.v, &ldv);
  acc_t* O = out_rows(out, T * Dh, ws.o_acc);
  ws.s.resize(std::min(T, kRowBlock) * len);
  acc_t* S = ws.s.data();
  for (int64_t i0 = 0; i0 < T; i0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, T - i0);
    gemm_rm<acc_t>(ws.blas, false, true, rows, len, Dh, scale, Q + i0 * ldq, ldq, K, ldk, 0, S,
                   len);
    for (int64_t r = 0; r < rows; ++r) {
      lse[i0 + r] = softmax_row(S + r * len, len);
      if (drop.active()) drop_row(drop, drop.row_key(row0 + i0 + r), S + r * len, len);
    }
    gemm_rm<acc_t>(ws.blas, false, false, rows, Dh, len, 1, S, len, V, ldv, 0, O + i0 * Dh, Dh);
  }
  store_rows(out, O, T * Dh);
}

// One head: inputs as rows (ld apart); dq, dk, dv (T, Dh) contiguous.
template <typename scalar_t, typename acc_t>
void backward_head(const scalar_t* dout, int64_t lddo_in, const scalar_t* q, int64_t ldq_in,
                   const scalar_t* k, int64_t ldk_in, const scalar_t* v, int64_t ldv_in,
                   const scalar_t* out, int64_t ldo_in, const acc_t* lse, scalar_t* dq,
                   scalar_t* dk, scalar_t* dv, int64_t T, int64_t Dh, int64_t len, acc_t scale,
                   const AttentionDropout& drop, int64_t row0, Workspace<acc_t>& ws) {
  using Vec = Vectorized<acc_t>;
  // Padded keys (t >= len) get zero gradient; with len = 0 nothing depends on q either.
  std::fill(dk + len * Dh, dk + T * Dh, scalar_t(0));
  std::fill(dv + len * Dh, dv + T * Dh, scalar_t(0));
  if (len == 0) {
    std::fill(dq, dq + T * Dh, scalar_t(0));
    return;
  }
  int64_t lddo, ldq, ldk, ldv, ldo;
  const acc_t* dO = rows_as_acc(dout, lddo_in, T, Dh, ws.dout, &lddo);
  const acc_t* Q = rows_as_acc(q, ldq_in, T, Dh, ws.q, &ldq);
  const acc_t* K = rows_as_acc(k, ldk_in, len, Dh, ws.k, &ldk);
  const acc_t* V = rows_as_acc(v, ldv_in, len, Dh, ws.v, &ldv);
  const acc_t* O = rows_as_acc(out, ldo_in, T, Dh, ws.out, &ldo);
  acc_t* dQ = out_rows(dq, T * Dh, ws.dq_acc);
  acc_t* dK = out_rows(dk, len * Dh, ws.dk_acc);
  acc_t* dV = out_rows(dv, len * Dh, ws.dv_acc);
  const int64_t block = std::min(T, kRowBlock);
  ws.s.resize(block * len);
  ws.dp.resize(block * len);
  acc_t* P = ws.s.data();
  acc_t* dS = ws.dp.data();
  for (int64_t i0 = 0; i0 < T; i0 += kRowBlock) {
    const int64_t rows = std::min(kRowBlock, T - i0);
    const acc_t* Qb = Q + i0 * ldq;
    const acc_t* dOb = dO + i0 * lddo;
    const acc_t beta = i0 == 0 ? acc_t(0) : acc_t(1);  // dK, dV: first block writes, rest add
    gemm_rm<acc_t>(ws.blas, false, true, rows, len, Dh, scale, Qb, ldq, K, ldk, 0, P, len);
    for (int64_t r = 0; r < rows; ++r) {
      const acc_t l = lse[i0 + r];
      at::vec::map([l](Vec x) { return (x - Vec(l)).exp(); }, P + r * len, P + r * len, len);
    }
    gemm_rm<acc_t>(ws.blas, false, true, rows, len, Dh, 1, dOb, lddo, V, ldv, 0, dS, len);
    for (int64_t r = 0; r < rows; ++r) {
      const acc_t delta = dot(dOb + r * lddo, O + (i0 + r) * ldo, Dh);
      if (drop.active()) {  // dS = P (dP Z - D), then P becomes P Z for dV
        drop_row(drop, drop.row_key(row0 + i0 + r), P + r * len, len, dS + r * len, delta);
      } else {
        at::vec::map2([delta](Vec p, Vec dp) { return p * (dp - Vec(delta)); }, dS + r * len,
                      P + r * len, dS + r * len, len);
      }
    }
    gemm_rm<acc_t>(ws.blas, true, false, len, Dh, rows, 1, P, len, dOb, lddo, beta, dV, Dh);
    gemm_rm<acc_t>(ws.blas, false, false, rows, Dh, len, scale, dS, len, K, ldk, 0, dQ + i0 * Dh,
                   Dh);
    gemm_rm<acc_t>(ws.blas, true, false, len, Dh, rows, scale, dS, len, Qb, ldq, beta, dK, Dh);
  }
  store_rows(dq, dQ, T * Dh);
  store_rows(dk, dK, len * Dh);
  store_rows(dv, dV, len * Dh);
}

// The kernels of MhsaOps (mhsa_args.h), which checks the arguments first.
std::tuple<at::Tensor, at::Tensor> mhsa_forward_cpu(const MhsaSizes& s,
                                                    const AttentionDropout& drop,
                                                    const at::Tensor& q_in, const at::Tensor& k_in,
                                                    const at::Tensor& v_in,
                                                    const c10::optional<at::Tensor>& lengths,
                                                    double scale) {
  const at::Tensor q = rows_readable(q_in), k = rows_readable(k_in), v = rows_readable(v_in);
  const std::vector<int64_t> len = read_lengths(lengths, s.B, s.T, "lstm_fused::mhsa");
  at::Tensor out = at::empty({s.B, s.N, s.T, s.Dh}, q.options());
  at::Tensor lse = at::empty({s.B, s.N, s.T}, q.options().dtype(mhsa_acc_type(q.scalar_type())));
  if (lse.numel() == 0) return {out, lse};  // B, N or T is 0 (Dh = 0 runs: lse = log len)
  const int64_t head = s.T * s.Dh;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_forward_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const Heads<scalar_t> qh = heads_of<scalar_t>(q), kh = heads_of<scalar_t>(k),
                              vh = heads_of<scalar_t>(v);
        scalar_t* op = out.data_ptr<scalar_t>();
        acc_t* lp = lse.data_ptr<acc_t>();
        at::parallel_for(0, s.B * s.N, 1, [&](int64_t h0, int64_t h1) {
          Workspace<acc_t> ws;
          for (int64_t h = h0; h < h1; ++h) {
            const int64_t b = h / s.N, n = h % s.N;
            forward_head<scalar_t, acc_t>(qh.head(b, n), qh.st, kh.head(b, n), kh.st, vh.head(b, n),
                                          vh.st, op + h * head, lp + h * s.T, s.T, s.Dh, len[b],
                                          static_cast<acc_t>(scale), drop, h * s.T, ws);
          }
        });
      });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mhsa_backward_cpu(const MhsaSizes& s,
                                                                 const AttentionDropout& drop,
                                                                 const MhsaBackwardInputs& in) {
  const at::Tensor q = rows_readable(in.q), k = rows_readable(in.k), v = rows_readable(in.v);
  const at::Tensor dout = rows_readable(in.grad_out.to(q.scalar_type()));
  const at::Tensor out = rows_readable(in.out), lse = in.lse.contiguous();
  const std::vector<int64_t> len = read_lengths(in.lengths, s.B, s.T, "lstm_fused::mhsa");
  at::Tensor dq = at::empty({s.B, s.N, s.T, s.Dh}, q.options());
  at::Tensor dk = at::empty_like(dq), dv = at::empty_like(dq);
  if (s.B * s.N * s.T == 0) return {dq, dk, dv};
  const int64_t head = s.T * s.Dh;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "mhsa_backward_cpu", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const Heads<scalar_t> doh = heads_of<scalar_t>(dout), qh = heads_of<scalar_t>(q),
                              kh = heads_of<scalar_t>(k), vh = heads_of<scalar_t>(v),
                              oh = heads_of<scalar_t>(out);
        const acc_t* lp = lse.data_ptr<acc_t>();
        scalar_t* dqp = dq.data_ptr<scalar_t>();
        scalar_t* dkp = dk.data_ptr<scalar_t>();
        scalar_t* dvp = dv.data_ptr<scalar_t>();
        at::parallel_for(0, s.B * s.N, 1, [&](int64_t h0, int64_t h1) {
          Workspace<acc_t> ws;
          for (int64_t h = h0; h < h1; ++h) {
            const int64_t b = h / s.N, n = h % s.N, o = h * head;
            backward_head<scalar_t, acc_t>(
                doh.head(b, n), doh.st, qh.head(b, n), qh.st, kh.head(b, n), kh.st, vh.head(b, n),
                vh.st, oh.head(b, n), oh.st, lp + h * s.T, dqp + o, dkp + o, dvp + o, s.T, s.Dh,
                len[b], static_cast<acc_t>(in.scale), drop, h * s.T, ws);
          }
        });
      });
  return {dq, dk, dv};
}

}  // namespace

// This variant's entries (kernels.h); registered for the CPU by dispatch.cpp.
using CpuMhsaOps = MhsaOps<&mhsa_forward_cpu, &mhsa_backward_cpu>;
extern const MhsaKernels mhsa_kernels{&CpuMhsaOps::forward, &CpuMhsaOps::backward};

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
