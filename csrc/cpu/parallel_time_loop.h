// The threading of the CPU kernels: a guard that runs a whole call on one thread where the
// machine is busy (OneThreadIfBusy), and the fused time loops' teams of threads, started once
// per loop, which either share out the items of every step and meet after each
// (parallel_time_loop), or share out the batch rows once and meet only at the end
// (parallel_row_loop); parallel_tile_loop picks one.
//
// The machine may be shared (CI runners, data-loader workers, several training processes):
// then the OS takes a thread off its core for milliseconds at a time, and a parallel region
// waits at its end for every thread of its team, i.e. for the scheduler. What keeps a call
// from collapsing there:
// - OneThreadIfBusy: where more threads are runnable than there are CPUs, the call makes no
//   parallel region at all (its own, ATen's, MKL's, oneDNN's): one thread.
// - parallel_row_loop has no per-step barrier: each thread runs every step of its own rows
//   (rows of the batch never read each other's state), so a thread that loses its core for a
//   while delays only its own rows.
// - The per-step barrier of parallel_time_loop (StepBarrier) spins only briefly, then sleeps
//   (a futex on Linux): a waiting thread gives its core back, where OpenMP's barrier (libgomp:
//   spin for milliseconds) would keep it; and the loop measures what its barrier costs: once
//   its steps have taken longer than one thread would have, it goes on with one thread.
// Both loops end in a StepBarrier too, so that the threads reach OpenMP's implicit barrier at
// the end of the region together, instead of spinning in it.
//
// body(step, i0, i1) runs inside an OpenMP region: it must not throw (take raw pointers before
// the loop) nor call ATen's parallel functions. Each thread keeps the same items every step, so
// it keeps its part of the weights (panels) or of the state (rows) in its own cache.
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include <ATen/Parallel.h>

#include "switches.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <thread>

#ifdef __linux__
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void spin_pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// A barrier for a fixed team that spins for at most kSpinNs, then sleeps until released.
// Sense by generation: wait() returns once every thread of the team has called it.
class StepBarrier {
 public:
  // About the time two threads of an unloaded machine take to arrive one after the other
  // (the imbalance of a step, and a futex wake-up costs as much): past it, the thread waited
  // for is most likely not running, and spinning would take the core it needs.
  static constexpr int64_t kSpinNs = 50000;

  explicit StepBarrier(int n) : n_(static_cast<uint32_t>(n)) {}

  // Called by every thread of the team; `last` is run by the last one to arrive, before the
  // others are released (every other thread's writes before wait() are visible to it, and its
  // writes to them after wait()).
  template <typename Last>
  void wait(const Last& last) {
    const uint32_t gen = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      last();
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(gen + 1, std::memory_order_seq_cst);  // ordered before sleepers_ is read
      if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_all();
      return;
    }
    const int64_t start = now_ns();
    for (int i = 0;; ++i) {
      if (generation_.load(std::memory_order_acquire) != gen) return;
      spin_pause();
      if ((i & 63) == 63 && now_ns() - start > kSpinNs) break;
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    while (generation_.load(std::memory_order_seq_cst) == gen) sleep_while(gen);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }
  void wait() {
    wait([] {});
  }

 private:
  void sleep_while(uint32_t gen) {
#ifdef __linux__
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&generation_), FUTEX_WAIT_PRIVATE, gen, nullptr,
            nullptr, 0);
#else
    (void)gen;
    std::this_thread::yield();
#endif
  }
  void wake_all() {
#ifdef __linux__
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&generation_), FUTEX_WAKE_PRIVATE, INT_MAX,
            nullptr, nullptr, 0);
#endif
  }

  const uint32_t n_;
  alignas(64) std::atomic<uint32_t> arrived_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  alignas(64) std::atomic<int> sleepers_{0};
};
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex on the generation");

// ---- One thread where the machine is busy --------------------------------------------------
//
// Every parallel region of a call (the time loops, and ATen's, MKL's and oneDNN's regions:
// about 30 in an LSTM layer's forward and backward) waits at its end for every thread of its
// team. Where more threads are runnable than there are CPUs, one of the team is soon waiting
// for a core, and each region then costs a turn of the scheduler (milliseconds), where one
// thread would have done the whole call in its own time slices. So a call runs on one thread
// while the machine's runnable threads (Linux: /proc/loadavg's count of running threads, read
// at most every kBusyCheckNs) exceed the CPUs this process may use.

// MKL's mkl_set_num_threads_local (mkl.h makes that name a macro for this one; the lower-case
// symbol is the Fortran entry, which takes a pointer): exported by the libtorch_cpu of MKL
// builds, null elsewhere.
extern "C" int MKL_Set_Num_Threads_Local(int) __attribute__((weak));

// CPUs this process may run on (its affinity mask).
inline int usable_cpus() {
#ifdef __linux__
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// Threads of the machine runnable now (the 4th field of /proc/loadavg, "running/total"), or
// -1 where it cannot be read.
inline int runnable_threads() {
#ifdef __linux__
  const int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[128];
  const ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  const char* p = buf;
  for (int field = 0; field < 3 && p != nullptr; ++field) {
    p = std::strchr(p, ' ');
    if (p != nullptr) ++p;
  }
  return p != nullptr ? std::atoi(p) : -1;
#else
  return -1;
#endif
}

constexpr int64_t kBusyCheckNs = 10000000;  // 10 ms

// Whether other threads are competing for this process's CPUs (checked at most every 10 ms).
// The switch cpu_threads = "all" (csrc/switches.h) turns this off (tests of the parallel paths
// on a shared machine; benchmarks of what the threads would do).
inline bool machine_busy() {
  if (switches().cpu_threads == CpuThreads::All) return false;
  static std::atomic<int64_t> checked_at{0};  // steady clock: never 10 ms from 0
  static std::atomic<bool> busy{false};
  const int64_t now = now_ns();
  if (now - checked_at.load(std::memory_order_relaxed) < kBusyCheckNs)
    return busy.load(std::memory_order_relaxed);
  static const int cpus = usable_cpus();
  const int running = runnable_threads();
  // The calling thread is one of the running; a worker of the last region still spinning
  // may be another.
  const bool now_busy = running > cpus;
  busy.store(now_busy, std::memory_order_relaxed);
  checked_at.store(now, std::memory_order_relaxed);
  return now_busy;
}

// The calling thread's parallel-region thread counts (OpenMP's and MKL's) that
// one_thread_if_busy replaced, for restore_threads.
struct SavedThreads {
  bool active = false;  // false: nothing was changed
  int omp = 1, mkl = 0;
};

// Where the machine is busy, the calling thread's parallel regions use one thread from now on
// (OpenMP's and MKL's thread counts of this thread) until restore_threads(returned value).
inline SavedThreads one_thread_if_busy() {
  SavedThreads saved;
#ifdef _OPENMP
  if (at::in_parallel_region() || at::get_num_threads() <= 1 || !machine_busy()) return saved;
  saved.omp = omp_get_max_threads();
  omp_set_num_threads(1);
  if (MKL_Set_Num_Threads_Local != nullptr) saved.mkl = MKL_Set_Num_Threads_Local(1);
  saved.active = true;
#endif
  return saved;
}

inline void restore_threads(const SavedThreads& saved) {
#ifdef _OPENMP
  if (!saved.active) return;
  omp_set_num_threads(saved.omp);
  if (MKL_Set_Num_Threads_Local != nullptr) MKL_Set_Num_Threads_Local(saved.mkl);
#else
  (void)saved;
#endif
}

// For the lifetime of the object: one_thread_if_busy, restored after. (The Python layer holds
// the same for a whole module call: lstm_fused._C.one_thread_if_busy, csrc/ops.cpp.)
class OneThreadIfBusy {
 public:
  OneThreadIfBusy() : saved_(one_thread_if_busy()) {}
  ~OneThreadIfBusy() { restore_threads(saved_); }
  OneThreadIfBusy(const OneThreadIfBusy&) = delete;
  OneThreadIfBusy& operator=(const OneThreadIfBusy&) = delete;

 private:
  const SavedThreads saved_;
};

// The threads a loop of `n_items` items would use (1: run it serially).
inline int64_t loop_threads(int64_t n_items, bool parallel) {
#ifdef _OPENMP
  // Same OpenMP runtime as ATen (libgomp.so.1, loaded by libtorch first), so the thread count
  // follows torch.set_num_threads. Inside another parallel region: serial, as ATen does.
  if (!parallel || at::in_parallel_region()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n_items));
#else
  (void)n_items;
  (void)parallel;
  return 1;
#endif
}

// Items [i0, i1) of thread `id` of `team` when n_items are split in blocks of `grain`.
inline void share(int64_t n_items, int64_t grain, int64_t team, int64_t id, int64_t& i0,
                  int64_t& i1) {
  const int64_t blocks = (n_items + grain - 1) / grain;
  const int64_t per = blocks / team, extra = blocks % team;
  const int64_t b0 = id * per + std::min(id, extra), b1 = b0 + per + (id < extra ? 1 : 0);
  i0 = std::min(n_items, b0 * grain);
  i1 = std::min(n_items, b1 * grain);
}

// The fork of one loop: `n_threads` threads run thread_body(team, id) (serially, as thread 0
// of a team of 1, without OpenMP or where the team comes out smaller than asked for).
template <typename ThreadBody>
void run_team(int64_t n_threads, const ThreadBody& thread_body) {
#ifdef _OPENMP
  if (n_threads > 1) {
#pragma omp parallel num_threads(static_cast<int>(n_threads))
    {
      // The team may be smaller than asked for (a thread limit): then thread 0 does it all.
      if (omp_get_num_threads() == n_threads)
        thread_body(n_threads, static_cast<int64_t>(omp_get_thread_num()));
      else if (omp_get_thread_num() == 0) thread_body(int64_t(1), int64_t(0));
    }
    return;
  }
#endif
  thread_body(int64_t(1), int64_t(0));
}

// Every step's items shared out among the threads, a barrier after each step (every item of a
// step must be done before any item of the next starts: each reads all of h_{t-1}, or in the
// backward all of dz_{t+1}).
//
// What the barrier waits cost is measured: per step, the wall time of the step against one
// thread's estimate, n_items times the best per-item time of the team's threads (a thread the
// OS took off its core shows a long step, the others a short one). Once the team's steps have
// taken longer in all than that estimate (plus kSlackNs), two threads are losing to one, and
// thread 0 does every later step alone, the others asleep until the end.
template <typename Body>
void parallel_time_loop(int64_t n_steps, int64_t n_items, bool parallel, const Body& body) {
  constexpr int kMaxThreads = 64;
  constexpr int64_t kSlackNs = 200000;  // an unloaded machine's timer ticks never add up to it
  const int64_t n_threads =
      std::min<int64_t>(loop_threads(n_items, parallel && n_steps > 1), kMaxThreads);
  StepBarrier barrier(static_cast<int>(n_threads));
  // Written by each thread before it arrives, read by the last one to arrive.
  int64_t started[kMaxThreads], arrived[kMaxThreads];
  // Read and written by the last thread to arrive only; serial_from read by all after it.
  int64_t wall_ns = 0, serial_ns = 0, step_start = now_ns();
  int64_t serial_from = n_steps;  // steps from here on run on thread 0 alone
  run_team(n_threads, [&](int64_t team, int64_t id) {
    if (team == 1) {
      for (int64_t step = 0; step < n_steps; ++step) body(step, int64_t(0), n_items);
      return;
    }
    int64_t i0, i1;
    share(n_items, 1, team, id, i0, i1);
    int64_t step = 0;
    for (; step < n_steps; ++step) {
      started[id] = now_ns();
      if (i0 < i1) body(step, i0, i1);
      arrived[id] = now_ns();
      barrier.wait([&] {
        const int64_t now = now_ns();
        int64_t best = INT64_MAX;  // one thread's time for all items, at the fastest's rate
        for (int64_t j = 0; j < team; ++j) {
          int64_t j0, j1;
          share(n_items, 1, team, j, j0, j1);
          if (j1 > j0) best = std::min(best, (arrived[j] - started[j]) * n_items / (j1 - j0));
        }
        wall_ns += now - step_start;
        serial_ns += best;
        step_start = now;
        if (wall_ns > serial_ns + kSlackNs) serial_from = step + 1;
      });
      if (serial_from <= step + 1) break;
    }
    if (serial_from >= n_steps) return;
    // One thread from here on; the others wait in the barrier (asleep) until it is done, so
    // that they reach the region's end together, not spinning in OpenMP's barrier.
    if (id == 0)
      for (int64_t s = serial_from; s < n_steps; ++s) body(s, int64_t(0), n_items);
    barrier.wait();
  });
}

// The batch rows shared out once: each thread runs every step of its rows (in blocks of
// `grain` rows, a register tile's height), and the threads meet only at the end. body(step,
// r0, r1) must touch nothing of rows outside [r0, r1) that another step reads.
template <typename Body>
void parallel_row_loop(int64_t n_steps, int64_t n_rows, int64_t grain, bool parallel,
                       const Body& body) {
  const int64_t blocks = (n_rows + grain - 1) / grain;
  const int64_t n_threads = std::min<int64_t>(loop_threads(blocks, parallel), 64);
  StepBarrier barrier(static_cast<int>(n_threads));
  run_team(n_threads, [&](int64_t team, int64_t id) {
    int64_t r0, r1;
    share(n_rows, grain, team, id, r0, r1);
    if (r0 < r1)
      for (int64_t step = 0; step < n_steps; ++step) body(step, r0, r1);
    if (team > 1) barrier.wait();
  });
}

// A fused time loop: n_steps steps, each of n_panels panels (of hidden units) times B batch
// rows; body(step, p0, p1, b0, b1) does panels [p0, p1) of rows [b0, b1). Rows never read
// each other's state, so where every thread gets at least kMinRowsPerThread rows the rows are
// shared out once and there is no barrier at all (parallel_row_loop); else the panels of every
// step are (parallel_time_loop). Sharing the rows, every thread streams all the weights each
// step for its rows alone; sharing the panels, only its own, for all rows, but the threads
// meet after every step and read each other's h (or dz). share_rows = false takes the panels
// whatever B: for weights too large for a core's caches.
// 2-core AMD EPYC, 2 threads, T=50..100, forward+backward, nn.LSTM's time / ours, rows vs
// panels: B=16, H=256 1.00 vs 1.07; B=16, H=128 1.10 vs 1.24; B=32, H=256 1.44 vs 1.46;
// B=64, H=128 1.12 vs 1.01; B=64, H=256 1.25 vs 1.32; B=128, H=256 1.22 vs 1.10.
template <typename Body>
void parallel_tile_loop(int64_t n_steps, int64_t n_panels, int64_t B, bool parallel,
                        const Body& body, bool share_rows = true) {
  constexpr int64_t kMinRowsPerThread = 32;
  const int64_t threads = loop_threads(B, parallel);
  if (share_rows && threads > 1 && B >= kMinRowsPerThread * threads) {
    parallel_row_loop(n_steps, B, 1, parallel, [&](int64_t step, int64_t b0, int64_t b1) {
      body(step, int64_t(0), n_panels, b0, b1);
    });
  } else {
    parallel_time_loop(n_steps, n_panels, parallel, [&](int64_t step, int64_t p0, int64_t p1) {
      body(step, p0, p1, int64_t(0), B);
    });
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
