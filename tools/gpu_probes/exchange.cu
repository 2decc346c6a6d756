// Exchange-only microkernel: the cross-CTA exchange of h that bounds a step of the tensor-core
// LSTM time loop (docs/gpu_performance.md, "the exchange"), without any of its math.
//
// One CTA per SM, ceil(H / U) CTAs of `warps` warps (as csrc/cuda/lstm_tc_plan.h plans the
// forward: U units per CTA; for the backward's exchange of dz, H is 4H and U is 4 x units);
// CTA c owns columns [c U, min(H, (c+1) U)); warp w of every CTA reads the K-slice
// [w K, min(H, (w+1) K)) of h, i.e. the slices of producers w K / U .. (min(H, (w+1) K) - 1) / U.
// Per step s (h_s in slot s & 1 of a global double buffer hbuf[2][B][H] of 16-bit words):
//   wait   flags: lanes of warp w spin (ld.acquire.gpu) until flag[p] >= s + 1 for each of
//          its producers p, then __syncwarp (flags one per 128-byte line, like the kernel's
//          kTcFlagStride);                            grid: nothing (the grid barrier below)
//   fetch  (modes with "fetch") the warp copies its B x K slice of h_s from L2 (cp.async.cg,
//          16 bytes per piece) into padded shared memory [B][H + 8], as the kernel does before
//          its ldmatrix
//   join   __syncthreads (the kernel's split-K reduction joins the warps here)
//   write  the CTA's B x U slice of h_{s+1} into slot (s + 1) & 1
//   publish flags: __syncthreads, thread 0 st.release.gpu flag[c] = s + 2;  grid: grid.sync()
//   stores ("+stores" modes) B x 6U 16-bit words per CTA into a T-long HBM array (the gates,
//          cells and y of the step), issued after the flag ("stores-after") or before the
//          release ("stores-before": the release has to drain them)
// Before step 0 every CTA writes h_0 and publishes flag 1 (grid: grid.sync). Every value
// written is a function of (step, row, unit): with --check every fetched word is compared
// (a stale or torn read counts as an error), so this is also a test of the flag protocol on
// real hardware. Waits are bounded: a CTA that waits too long sets an abort bit and every
// CTA leaves its waits, so a broken protocol ends in a reported error, not a hung GPU.
//
// Builds (tools/gpu_probes/build.sh): nvcc (timed with CUDA events, cooperative launch so that
// every CTA is resident) and g++ with the emulation (tests/cuda_emu/: tiny shapes, a check of
// the protocol and the double buffering, no timing).
//
//   exchange [--units U] [--batch B] [--hidden H] [--warps W] [--kslice K] [--steps T] [--reps R]
//            [--modes local,flags,flags+fetch,...] [--check] [--shape-name NAME]
//            [--check-offset N]   (the checker expects step s + N: with N != 0 every fetched
//                                  word must count as an error; a test of the checker itself)
// Prints one RESULT line per mode: us per step (median of R launches; min, max), and errors.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "probe_runtime.h"
#include "cuda/tc_primitives.cuh"

namespace tc = lstm_fused::cuda::tc;

namespace {

enum Mode : int {
  kLocal = 0,         // no exchange: the loop, its two __syncthreads and the writes
  kFlags,             // flags, no fetch
  kFlagsFetch,        // flags + fetch                          (R1's exchange)
  kFlagsFetchStoresAfter,   // + the step's stores after the flag   (R1's order)
  kFlagsFetchStoresBefore,  // + the step's stores before the release
  kGrid,              // grid.sync, no fetch
  kGridFetch,         // grid.sync + fetch                      (the barrier design)
  kModes
};
const char* const kModeNames[kModes] = {"local", "flags", "flags+fetch",
                                        "flags+fetch+stores-after", "flags+fetch+stores-before",
                                        "grid", "grid+fetch"};

constexpr unsigned kAbort = 0x80000000u;
constexpr int kPad = 8;  // smem row padding in 16-bit words (as the kernel's [B][H + 8])
constexpr int kFlagStride = 32;  // one flag per 128-byte line (csrc/cuda/lstm_tc_plan.h)

struct Params {
  uint16_t* hbuf;       // [2][B][H]
  unsigned* flags;      // [ctas * kFlagStride], zero at launch
  unsigned* status;     // [0]: error count | kAbort; [1]: checksum sink
  uint16_t* stores;     // [steps][ctas][B][6 U] ("+stores" modes)
  int B, H, U, K, steps, mode, check;
  int check_offset;     // the checker expects step s + check_offset (a test of the checker)
  long long max_polls;  // a wait gives up after this many polls
};

__device__ __forceinline__ uint16_t value(int step, int row, int unit) {
  return static_cast<uint16_t>((step * 131 + row * 17 + unit * 3) & 0x7FFF);
}

__device__ __forceinline__ bool aborted(const Params& p) {
  return (tc::ld_acquire_gpu(p.status) & kAbort) != 0;
}

// Spin until *flag >= target; false (and the abort bit set) after max_polls polls.
__device__ bool bounded_wait(const Params& p, const unsigned* flag, unsigned target) {
  long long polls = 0;
  while (tc::ld_acquire_gpu(flag) < target) {
    if (++polls >= p.max_polls) {
      probe::atomic_or(p.status, kAbort);
      return false;
    }
    if ((polls & 1023) == 0 && aborted(p)) return false;
    probe::relax(polls);
  }
  return true;
}

__device__ __forceinline__ void write_slice(const Params& p, int step, uint16_t* slot) {
  const int c = blockIdx.x, u0 = c * p.U, units = min(p.U, p.H - u0), n = p.B * units;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const int row = i / units, unit = u0 + i % units;
    slot[row * p.H + unit] = value(step, row, unit);
  }
}

__device__ __forceinline__ void step_stores(const Params& p, int step) {
  const int c = blockIdx.x, n = p.B * 6 * p.U;
  uint16_t* dst = p.stores + (static_cast<size_t>(step) * gridDim.x + c) * n;
  for (int i = threadIdx.x; i < n; i += blockDim.x) dst[i] = static_cast<uint16_t>(step + i);
}

__global__ void exchange_kernel(Params p) {
  PROBE_DYNAMIC_SHARED(smem);
  uint16_t* h_s = reinterpret_cast<uint16_t*>(smem);  // [B][H + kPad]
  const int c = blockIdx.x, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool grid_mode = p.mode == kGrid || p.mode == kGridFetch;
  const bool uses_flags = !grid_mode && p.mode != kLocal;
  const bool fetch = p.mode == kFlagsFetch || p.mode == kFlagsFetchStoresAfter ||
                     p.mode == kFlagsFetchStoresBefore || p.mode == kGridFetch;
  const int pitch = p.H + kPad, k0 = warp * p.K, k1 = min(p.H, k0 + p.K);
  const int first = k0 / p.U, last = (k1 - 1) / p.U;  // this warp's producers (none: k0 >= H)
  const int chunks_per_row = k1 > k0 ? (k1 - k0) / 8 : 0, chunks = p.B * chunks_per_row;
  const size_t slot_words = static_cast<size_t>(p.B) * p.H;
  uint32_t sum = 0;
  unsigned errors = 0;

  write_slice(p, 0, p.hbuf);
  __syncthreads();
  if (grid_mode) probe::grid_sync();
  else if (uses_flags && threadIdx.x == 0) tc::st_release_gpu(p.flags + c * kFlagStride, 1u);

  for (int s = 0; s < p.steps; ++s) {
    if (uses_flags) {
      for (int q = first + lane; q <= last; q += 32)
        bounded_wait(p, p.flags + q * kFlagStride, static_cast<unsigned>(s + 1));
      __syncwarp();
    }
    if (fetch) {  // as the kernel stages h: cp.async.cg (L2, never a stale L1 line)
      const uint16_t* src = p.hbuf + (s & 1) * slot_words;
      for (int i = lane; i < chunks; i += 32) {
        const int row = i / chunks_per_row, col = k0 + (i % chunks_per_row) * 8;
        tc::cp_async_16(h_s + row * pitch + col, src + row * p.H + col);
      }
      tc::cp_async_commit();
      tc::cp_async_wait_all();
      __syncwarp();
      for (int i = lane; i < chunks; i += 32) {
        const int row = i / chunks_per_row, col = k0 + (i % chunks_per_row) * 8;
        const uint16_t* got = h_s + row * pitch + col;
        sum ^= got[0];  // one word per piece keeps the copy live
        if (p.check)
          for (int e = 0; e < 8; ++e) errors += got[e] != value(s + p.check_offset, row, col + e);
      }
      __syncwarp();  // the reads above before the next step's copies overwrite h_s
    }
    __syncthreads();
    const bool before = p.mode == kFlagsFetchStoresBefore;
    write_slice(p, s + 1, p.hbuf + ((s + 1) & 1) * slot_words);
    if (before) step_stores(p, s);
    __syncthreads();
    if (grid_mode) probe::grid_sync();
    else if (uses_flags && threadIdx.x == 0)
      tc::st_release_gpu(p.flags + c * kFlagStride, static_cast<unsigned>(s + 2));
    if (p.mode == kFlagsFetchStoresAfter) step_stores(p, s);
  }
  if (errors) probe::atomic_add(p.status, errors);
  if (sum == 0x9E3779B9u) probe::atomic_add(p.status + 1, 1u);  // keeps the fetch (practically never)
}

struct Config {
  std::string shape_name;
  int units = 6, B = 16, H = 768, warps = 8, kslice = 96, steps = 1024, reps = 10, check = 0;
  int ctas() const { return (H + units - 1) / units; }
  int check_offset = 0;
  std::vector<int> modes;
};

size_t smem_bytes(const Config& cfg) {
  return static_cast<size_t>(cfg.B) * (cfg.H + kPad) * sizeof(uint16_t);
}

std::string shape_key(const Config& cfg) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "ctas=%d,U=%d,B=%d,H=%d,warps=%d,K=%d,T=%d", cfg.ctas(),
                cfg.units, cfg.B, cfg.H, cfg.warps, cfg.kslice, cfg.steps);
  return buf;
}

#if PROBE_EMULATED
// The emulation runs every CUDA thread as an OS thread: it checks the protocol, it times
// nothing a GPU would.
struct Outcome { std::vector<double> us; unsigned status; };
Outcome run_mode(const Config& cfg, Params p) {
  probe::device_zero(p.flags, static_cast<size_t>(cfg.ctas()) * kFlagStride);
  probe::device_zero(p.status, 2);
  probe::launch(exchange_kernel, cfg.ctas(), cfg.warps * 32, smem_bytes(cfg), p);
  unsigned status[2];
  probe::to_host(status, p.status, 2);
  return {{}, status[0]};
}
#else
__global__ void hold_stream(long long cycles) {  // keeps the GPU busy while launches queue up
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}

struct Outcome { std::vector<double> us; unsigned status; };
Outcome run_mode(const Config& cfg, Params p) {
  using probe::check_cuda;
  const int total = 2 + cfg.reps;  // 2 warm-up launches
  std::vector<cudaEvent_t> ev(2 * total);
  for (auto& e : ev) check_cuda(cudaEventCreate(&e), "cudaEventCreate");
  check_cuda(cudaMemset(p.status, 0, 2 * sizeof(unsigned)), "cudaMemset");
  // Queue every launch behind a ~20 ms busy kernel, so that no host delay sits between an
  // event and its launch.
  hold_stream<<<1, 1>>>(40000000LL);
  for (int r = 0; r < total; ++r) {
    check_cuda(cudaMemsetAsync(p.flags, 0, cfg.ctas() * kFlagStride * sizeof(unsigned)), "cudaMemsetAsync");
    void* args[] = {&p};
    check_cuda(cudaEventRecord(ev[2 * r]), "cudaEventRecord");
    check_cuda(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(exchange_kernel),
                                           dim3(cfg.ctas()), dim3(cfg.warps * 32), args,
                                           smem_bytes(cfg), nullptr),
               "cudaLaunchCooperativeKernel");
    check_cuda(cudaEventRecord(ev[2 * r + 1]), "cudaEventRecord");
  }
  check_cuda(cudaDeviceSynchronize(), "exchange kernel run");
  Outcome out{{}, 0};
  for (int r = 2; r < total; ++r) {
    float ms = 0;
    check_cuda(cudaEventElapsedTime(&ms, ev[2 * r], ev[2 * r + 1]), "cudaEventElapsedTime");
    out.us.push_back(1000.0 * ms / cfg.steps);
  }
  for (auto& e : ev) cudaEventDestroy(e);
  check_cuda(cudaMemcpy(&out.status, p.status, sizeof(unsigned), cudaMemcpyDeviceToHost),
             "cudaMemcpy");
  return out;
}
#endif

int run(const Config& cfg) {
  if (cfg.H % 8 || cfg.kslice % 8 || cfg.warps < 1 || cfg.warps > 32 ||
      cfg.warps * cfg.kslice < cfg.H) {
    std::fprintf(stderr, "exchange: need H (%d) and K (%d) multiples of 8, 1 <= warps (%d) <= 32 "
                 "and warps x K >= H\n", cfg.H, cfg.kslice, cfg.warps);
    return 2;
  }
#if !PROBE_EMULATED
  using probe::check_cuda;
  int dev = 0, sms = 0, coop = 0, per_sm = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  check_cuda(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "attribute");
  check_cuda(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev), "attribute");
  check_cuda(cudaFuncSetAttribute(exchange_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem_bytes(cfg))),
             "cudaFuncSetAttribute");
  check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, exchange_kernel,
                                                           cfg.warps * 32, smem_bytes(cfg)),
             "occupancy");
  if (!coop || per_sm * sms < cfg.ctas()) {
    std::printf("RESULT\texchange/%s/*\tnan\tus/step\tFAIL\t%d CTAs cannot be co-resident "
                "(%d SMs x %d per SM, cooperative launch %d)\n", shape_key(cfg).c_str(),
                cfg.ctas(), sms, per_sm, coop);
    return 1;
  }
#endif
  Params p{};
  p.B = cfg.B;
  p.H = cfg.H;
  p.U = cfg.units;
  p.K = cfg.kslice;
  p.steps = cfg.steps;
  p.check = cfg.check;
  p.check_offset = cfg.check_offset;
  p.max_polls = PROBE_EMULATED ? (1LL << 26) : (1LL << 22);
  p.hbuf = probe::device_alloc<uint16_t>(2 * static_cast<size_t>(cfg.B) * cfg.H);
  p.flags = probe::device_alloc<unsigned>(static_cast<size_t>(cfg.ctas()) * kFlagStride);
  p.status = probe::device_alloc<unsigned>(2);
  const bool stores = std::find(cfg.modes.begin(), cfg.modes.end(), kFlagsFetchStoresAfter) !=
                          cfg.modes.end() ||
                      std::find(cfg.modes.begin(), cfg.modes.end(), kFlagsFetchStoresBefore) !=
                          cfg.modes.end();
  p.stores = probe::device_alloc<uint16_t>(stores ? static_cast<size_t>(cfg.steps) * cfg.ctas() *
                                                        cfg.B * 6 * cfg.units
                                                  : 1);
  int failures = 0;
  for (int mode : cfg.modes) {
    p.mode = mode;
    const Outcome o = run_mode(cfg, p);
    const unsigned errors = o.status & ~kAbort;
    const bool ok = errors == 0 && !(o.status & kAbort);
    failures += !ok;
    std::string key = "exchange/" + (cfg.shape_name.empty() ? "" : cfg.shape_name + "/") +
                      shape_key(cfg) + "/" + kModeNames[mode];
    if (o.us.empty()) {
      std::printf("RESULT\t%s\tnan\tus/step\t%s\temulated (no timing); check %s; errors %u%s\n",
                  key.c_str(), ok ? "ok" : "FAIL", cfg.check ? "on" : "off", errors,
                  (o.status & kAbort) ? "; a wait timed out (abort)" : "");
      continue;
    }
    std::vector<double> us = o.us;
    std::sort(us.begin(), us.end());
    std::printf("RESULT\t%s\t%.3f\tus/step\t%s\tmedian of %zu launches (min %.3f, max %.3f); "
                "check %s; errors %u%s\n", key.c_str(), us[us.size() / 2], ok ? "ok" : "FAIL",
                us.size(), us.front(),
                us.back(), cfg.check ? "on" : "off", errors,
                (o.status & kAbort) ? "; a wait timed out (abort)" : "");
  }
  probe::device_free(p.hbuf);
  probe::device_free(p.flags);
  probe::device_free(p.status);
  probe::device_free(p.stores);
  return failures ? 1 : 0;
}

std::vector<int> parse_modes(const std::string& text) {
  std::vector<int> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string name = text.substr(start, end - start);
    int found = -1;
    for (int m = 0; m < kModes; ++m)
      if (name == kModeNames[m]) found = m;
    if (found < 0) {
      std::fprintf(stderr, "exchange: unknown mode '%s'\n", name.c_str());
      std::exit(2);
    }
    out.push_back(found);
    start = end + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Config cfg;
  std::string modes = "local,flags,flags+fetch,flags+fetch+stores-after,"
                      "flags+fetch+stores-before,grid,grid+fetch";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "exchange: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--units") cfg.units = std::atoi(next());
    else if (arg == "--kslice") cfg.kslice = std::atoi(next());
    else if (arg == "--batch") cfg.B = std::atoi(next());
    else if (arg == "--hidden") cfg.H = std::atoi(next());
    else if (arg == "--warps") cfg.warps = std::atoi(next());
    else if (arg == "--steps") cfg.steps = std::atoi(next());
    else if (arg == "--reps") cfg.reps = std::atoi(next());
    else if (arg == "--modes") modes = next();
    else if (arg == "--shape-name") cfg.shape_name = next();
    else if (arg == "--check") cfg.check = 1;
    else if (arg == "--check-offset") cfg.check_offset = std::atoi(next());
    else {
      std::fprintf(stderr, "exchange: unknown argument %s (see the top of exchange.cu)\n",
                   arg.c_str());
      return 2;
    }
  }
  if (cfg.units < 1 || cfg.H < 1 || cfg.B < 1 || cfg.steps < 1 || cfg.reps < 1) {
    std::fprintf(stderr, "exchange: units, hidden, batch, steps and reps must be positive\n");
    return 2;
  }
  cfg.modes = parse_modes(modes);
  return run(cfg);
}
