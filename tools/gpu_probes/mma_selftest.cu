// One-warp self-test of the tensor-core wrappers in csrc/cuda/tc_primitives.cuh:
// mma.sync.m16n8k16 (bf16 and fp16, fp32 accumulation), ldmatrix .x4 and .x4.trans, cp.async.
//
// The same source builds twice:
//   nvcc  -std=c++17 -arch=sm_90 -I csrc -I tools/gpu_probes tools/gpu_probes/mma_selftest.cu
//         -> D computed by the GPU's tensor cores through the inline PTX;
//   g++   -x c++ -std=c++17 -pthread -DLSTM_FUSED_CUDA_EMULATION -I csrc -I tests/cuda_emu
//         -I tools/gpu_probes tools/gpu_probes/mma_selftest.cu
//         -> D computed by the emulation (tests/cuda_emu/), one OS thread per lane.
// (tools/gpu_probes/build.sh runs both.) Each build compares its D with a float64 matmul of the
// same inputs and, given `--against FILE` (the other build's `--write FILE`), with the other
// build's D, element by element. So a fragment layout that the emulation and the kernels share
// but the hardware does not (the blind spot of a self-consistent emulation) shows up here.
//
// Inputs: A (16 x 16), B (16 x 16 = two n8 tiles), C (16 x 16) from a fixed seed, values
// i / 128 with |i| <= 255 (exact in bf16 and fp16; every product and partial sum is exact in
// float32, so a correct D equals the float64 product exactly, whatever the summation order,
// unless the tensor core drops bits when it aligns its addends). The pass criterion leaves room
// for such rounding, not for a misplaced element: |D - D64| <= 2^-12 (sum_k |a b| + |c|) per
// element (a layout error moves whole products: an error of the order of the terms).
// Four ways to feed the same product (each D is 16 x 16: two mma per way):
//   0 "ptx-layout"   fragments packed by hand from the PTX ISA's figures (no ldmatrix);
//   1 "ldsm(A)+ldsm(Bt)"        A [m][k] and B^T [n][k] by ldmatrix.x4 (R1 forward's loads);
//   2 "ldsm(A)+ldsm.trans(B)"   B [k][n] by ldmatrix.x4.trans;
//   3 "ldsm.trans(At)+ldsm(Bt)" A^T [k][m] by ldmatrix.x4.trans.
// Output: one "RESULT" line per (dtype, way) (tools/gpu_probes/rows.py collects them).
// Exit status 0 when every D matches, 1 otherwise.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "probe_runtime.h"
#include "cuda/tc_primitives.cuh"

namespace tc = lstm_fused::cuda::tc;

namespace {

constexpr int kN = 16;       // every matrix is 16 x 16
constexpr int kPitch = 24;   // smem row pitch in 16-bit elements (48 B: rows stay 16-B aligned)
constexpr int kWays = 4;
const char* const kWayNames[kWays] = {"ptx-layout", "ldsm(A)+ldsm(Bt)", "ldsm(A)+ldsm.trans(B)",
                                      "ldsm.trans(At)+ldsm(Bt)"};

struct Args {
  const uint16_t* a;   // [16][16] A, m x k
  const uint16_t* at;  // [16][16] A^T, k x m
  const uint16_t* bt;  // [16][16] B^T, n x k (n 0-7: tile 0, n 8-15: tile 1)
  const uint16_t* b;   // [16][16] B, k x n
  const float* c;      // [16][16] C, m x n
  float* d;            // [kWays][16][16]
  int f16;             // 0: bf16, 1: fp16
};

__device__ __forceinline__ uint32_t pack(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

__device__ __forceinline__ void mma(int f16, float d[4], const uint32_t a[4], const uint32_t b[2],
                                    const float c[4]) {
  if (f16)
    tc::mma_f16_16816(d, a, b, c);
  else
    tc::mma_bf16_16816(d, a, b, c);
}

// One warp: the four ways, two n8 tiles each.
__global__ void mma_selftest_kernel(Args args) {
  PROBE_DYNAMIC_SHARED(smem);
  uint16_t* s_a = reinterpret_cast<uint16_t*>(smem);
  uint16_t* s_at = s_a + kN * kPitch;
  uint16_t* s_bt = s_at + kN * kPitch;
  uint16_t* s_b = s_bt + kN * kPitch;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  // Stage the four 16 x 16 matrices with cp.async: lane l copies row l / 2, half l % 2.
  {
    const int row = lane >> 1, col = (lane & 1) * 8;
    tc::cp_async_16(s_a + row * kPitch + col, args.a + row * kN + col);
    tc::cp_async_16(s_at + row * kPitch + col, args.at + row * kN + col);
    tc::cp_async_16(s_bt + row * kPitch + col, args.bt + row * kN + col);
    tc::cp_async_16(s_b + row * kPitch + col, args.b + row * kN + col);
    tc::cp_async_commit();
    tc::cp_async_wait_all();
  }
  __syncwarp();

  for (int way = 0; way < kWays; ++way) {
    uint32_t a[4], b[2][2];
    const int j = lane >> 3, r8 = lane & 7;  // ldmatrix: lane l addresses row l % 8 of matrix l / 8
    if (way == 0) {
      // PTX ISA, m16n8k16 fragments: a[r] = A[g + 8 (r & 1)][2t + 8 (r >> 1) + {0, 1}],
      // b[r] = B[k = 2t + 8r + {0, 1}][n = g], c[i] = C[g + 8 (i >> 1)][2t + (i & 1)].
      for (int r = 0; r < 4; ++r) {
        const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
        a[r] = pack(args.a[row * kN + col], args.a[row * kN + col + 1]);
      }
      for (int tile = 0; tile < 2; ++tile)
        for (int r = 0; r < 2; ++r) {
#if defined(MMA_SELFTEST_WRONG_LAYOUT)  // tests/test_gpu_probes.py: the test must fail
          const int n = g + 8 * tile, k = 2 * t + 8 * (1 - r);
#else
          const int n = g + 8 * tile, k = 2 * t + 8 * r;
#endif
          b[tile][r] = pack(args.bt[n * kN + k], args.bt[n * kN + k + 1]);
        }
    } else {
      // A: matrix j = rows 8 (j & 1) .., cols 8 (j >> 1) .. of A, or of A^T transposed.
      if (way == 3)
        tc::ldmatrix_x4_trans(a, s_at + (r8 + 8 * (j >> 1)) * kPitch + 8 * (j & 1));
      else
        tc::ldmatrix_x4(a, s_a + (r8 + 8 * (j & 1)) * kPitch + 8 * (j >> 1));
      // B: matrix j = (tile j >> 1, k half j & 1).
      uint32_t r[4];
      if (way == 2)
        tc::ldmatrix_x4_trans(r, s_b + (r8 + 8 * (j & 1)) * kPitch + 8 * (j >> 1));
      else
        tc::ldmatrix_x4(r, s_bt + (r8 + 8 * (j >> 1)) * kPitch + 8 * (j & 1));
      b[0][0] = r[0];
      b[0][1] = r[1];
      b[1][0] = r[2];
      b[1][1] = r[3];
    }
    for (int tile = 0; tile < 2; ++tile) {
      float c[4], d[4];
      for (int i = 0; i < 4; ++i)
        c[i] = args.c[(g + 8 * (i >> 1)) * kN + 8 * tile + 2 * t + (i & 1)];
      mma(args.f16, d, a, b[tile], c);
      for (int i = 0; i < 4; ++i)
        args.d[way * kN * kN + (g + 8 * (i >> 1)) * kN + 8 * tile + 2 * t + (i & 1)] = d[i];
    }
  }
}

struct Inputs {
  std::vector<double> a, b, c;  // A [m][k], B [k][n], C [m][n] as exact doubles
  std::vector<double> bound;    // [m][n]: sum_k |a b| + |c| (the scale of the element's terms)
  std::vector<uint16_t> a16, at16, bt16, b16;
  std::vector<float> c32;
};

Inputs draw(uint64_t seed, bool f16) {
  probe::Rng rng(seed);
  Inputs in;
  in.a.resize(kN * kN);
  in.b.resize(kN * kN);
  in.c.resize(kN * kN);
  for (auto& v : in.a) v = rng.uniform_int(-255, 255) / 128.0;
  for (auto& v : in.b) v = rng.uniform_int(-255, 255) / 128.0;
  for (auto& v : in.c) v = rng.uniform_int(-511, 511) / 128.0;
  auto bits = [&](double v) {
    return f16 ? probe::float_to_f16_bits(static_cast<float>(v))
               : probe::float_to_bf16_bits(static_cast<float>(v));
  };
  in.a16.resize(kN * kN);
  in.at16.resize(kN * kN);
  in.bt16.resize(kN * kN);
  in.b16.resize(kN * kN);
  in.c32.resize(kN * kN);
  for (int r = 0; r < kN; ++r)
    for (int col = 0; col < kN; ++col) {
      in.a16[r * kN + col] = bits(in.a[r * kN + col]);
      in.at16[col * kN + r] = bits(in.a[r * kN + col]);
      in.b16[r * kN + col] = bits(in.b[r * kN + col]);
      in.bt16[col * kN + r] = bits(in.b[r * kN + col]);
      in.c32[r * kN + col] = static_cast<float>(in.c[r * kN + col]);
    }
  return in;
}

std::vector<float> run_device(const Inputs& in, bool f16) {
  const size_t n = kN * kN;
  uint16_t* a = probe::device_alloc<uint16_t>(n);
  uint16_t* at = probe::device_alloc<uint16_t>(n);
  uint16_t* bt = probe::device_alloc<uint16_t>(n);
  uint16_t* b = probe::device_alloc<uint16_t>(n);
  float* c = probe::device_alloc<float>(n);
  float* d = probe::device_alloc<float>(kWays * n);
  probe::to_device(a, in.a16.data(), n);
  probe::to_device(at, in.at16.data(), n);
  probe::to_device(bt, in.bt16.data(), n);
  probe::to_device(b, in.b16.data(), n);
  probe::to_device(c, in.c32.data(), n);
  std::vector<float> poison(kWays * n, std::nanf(""));  // an unwritten D element fails
  probe::to_device(d, poison.data(), poison.size());
  Args args{a, at, bt, b, c, d, f16 ? 1 : 0};
  probe::launch(mma_selftest_kernel, 1, 32, 4 * kN * kPitch * sizeof(uint16_t), args);
  std::vector<float> out(kWays * n);
  probe::to_host(out.data(), d, out.size());
  probe::device_free(a);
  probe::device_free(at);
  probe::device_free(bt);
  probe::device_free(b);
  probe::device_free(c);
  probe::device_free(d);
  return out;
}

// D = A B + C in float64; in.bound gets the scale of each element's terms.
std::vector<double> reference(Inputs& in) {
  std::vector<double> d(kN * kN);
  in.bound.assign(kN * kN, 0.0);
  for (int m = 0; m < kN; ++m)
    for (int n = 0; n < kN; ++n) {
      double s = in.c[m * kN + n], scale = std::fabs(in.c[m * kN + n]);
      for (int k = 0; k < kN; ++k) {
        s += in.a[m * kN + k] * in.b[k * kN + n];
        scale += std::fabs(in.a[m * kN + k] * in.b[k * kN + n]);
      }
      d[m * kN + n] = s;
      in.bound[m * kN + n] = scale;
    }
  return d;
}

constexpr double kRelTol = 1.0 / 4096;  // 2^-12 of the element's terms

// File format of --write / --against: one line per (dtype, way): "<dtype> <way> v0 ... v255"
// (%.9g: float32 round-trips exactly).
void write_results(const std::string& path, const std::vector<std::string>& dtypes,
                   const std::vector<std::vector<float>>& results) {
  FILE* f = std::fopen(path.c_str(), "w");
  probe::check(f != nullptr, "opening the --write file");
  for (size_t i = 0; i < dtypes.size(); ++i)
    for (int way = 0; way < kWays; ++way) {
      std::fprintf(f, "%s %d", dtypes[i].c_str(), way);
      for (int e = 0; e < kN * kN; ++e) std::fprintf(f, " %.9g", results[i][way * kN * kN + e]);
      std::fprintf(f, "\n");
    }
  std::fclose(f);
}

// {dtype -> [kWays * 256]} from a --write file; missing entries stay empty.
bool read_results(const std::string& path, const std::string& dtype, std::vector<float>* out) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) return false;
  out->assign(kWays * kN * kN, std::nanf(""));
  char name[16];
  int way, found = 0;
  while (std::fscanf(f, "%15s %d", name, &way) == 2) {
    const bool mine = dtype == name && way >= 0 && way < kWays;
    for (int e = 0; e < kN * kN; ++e) {
      float v;
      if (std::fscanf(f, "%f", &v) != 1) {
        std::fclose(f);
        return false;
      }
      if (mine) (*out)[way * kN * kN + e] = v;
    }
    found += mine;
  }
  std::fclose(f);
  return found == kWays;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 19;
  std::string write_path, against_path, dtype_arg = "both";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else if (arg == "--write" && i + 1 < argc) write_path = argv[++i];
    else if (arg == "--against" && i + 1 < argc) against_path = argv[++i];
    else if (arg == "--dtype" && i + 1 < argc) dtype_arg = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--seed N] [--dtype bf16|f16|both] [--write FILE] "
                   "[--against FILE]\n", argv[0]);
      return 2;
    }
  }
  const char* world = PROBE_EMULATED ? "emulated" : "gpu";
  std::vector<std::string> dtypes;
  if (dtype_arg == "both" || dtype_arg == "bf16") dtypes.push_back("bf16");
  if (dtype_arg == "both" || dtype_arg == "f16") dtypes.push_back("f16");
  std::vector<std::vector<float>> results;
  int failures = 0;
  for (const std::string& dtype : dtypes) {
    const bool f16 = dtype == "f16";
    Inputs in = draw(seed + (f16 ? 1 : 0), f16);
    const std::vector<double> want = reference(in);
    results.push_back(run_device(in, f16));
    const std::vector<float>& got = results.back();
    std::vector<float> other;
    const bool have_other = !against_path.empty() && read_results(against_path, dtype, &other);
    if (!against_path.empty() && !have_other) {
      std::printf("RESULT\tmma_selftest/%s/%s-vs-other\tnan\tabs\tFAIL\tcannot read %s\n",
                  dtype.c_str(), world, against_path.c_str());
      ++failures;
    }
    for (int way = 0; way < kWays; ++way) {
      double err_ref = 0, err_other = 0;
      int inexact = 0, over = 0;
      for (int e = 0; e < kN * kN; ++e) {
        const double v = got[way * kN * kN + e], limit = kRelTol * in.bound[e];
        const double diff = std::isnan(v) ? INFINITY : std::fabs(v - want[e]);
        err_ref = std::fmax(err_ref, diff);
        inexact += diff != 0;
        over += !(diff <= limit);
        if (have_other) {
          const double o = other[way * kN * kN + e];
          const double d_other = std::isnan(o) ? INFINITY : std::fabs(v - o);
          err_other = std::fmax(err_other, d_other);
          over += !(d_other <= limit);
        }
      }
      const bool ok = over == 0;
      failures += !ok;
      std::printf("RESULT\tmma_selftest/%s/%s/%s\t%.3g\tmax|D-f64|\t%s\t%d of 256 elements "
                  "inexact, %d over 2^-12 of their terms%s",
                  dtype.c_str(), world, kWayNames[way], err_ref, ok ? "ok" : "FAIL", inexact,
                  over, have_other ? "; " : "\n");
      if (have_other)
        std::printf("max |D - D(%s)| = %.3g\n", against_path.c_str(), err_other);
    }
  }
  if (!write_path.empty()) write_results(write_path, dtypes, results);
  std::printf("mma_selftest (%s): %s\n", world, failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
