// A time loop whose every step is shared out among threads, for the fused CPU loops.
//
// body(step, i0, i1) does items [i0, i1) of one step (panels of hidden units); every item of a
// step must be done before any item of the next starts (each reads all of h_{t-1}, or in the
// backward all of dz_{t+1}). body runs inside an OpenMP region: it must not throw (take raw
// pointers before the loop) nor call ATen's parallel functions. The
// threads are started once for the whole loop and meet at a barrier after each step, instead
// of a fork/join per step (at::parallel_for), whose cost is a visible part of a short step.
// Each thread keeps the same items every step, so it keeps its part of the weights in its
// own cache.
#pragma once

#include "cpu/capability.h"  // first: it picks at::vec's instruction set
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace lstm_fused {
namespace cpu {
namespace CPU_CAPABILITY {  // capability.h

template <typename Body>
void parallel_time_loop(int64_t n_steps, int64_t n_items, bool parallel, const Body& body) {
#ifdef _OPENMP
  // Same OpenMP runtime as ATen (libgomp.so.1, loaded by libtorch first), so the thread count
  // follows torch.set_num_threads. Inside another parallel region: serial, as ATen does.
  const int64_t n_threads = std::min<int64_t>(at::get_num_threads(), n_items);
  if (parallel && n_threads > 1 && !at::in_parallel_region()) {
#pragma omp parallel num_threads(static_cast<int>(n_threads))
    {
      // The team may be smaller than asked for: split by its real size.
      const int64_t team = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t per = (n_items + team - 1) / team;
      const int64_t i0 = std::min(n_items, id * per), i1 = std::min(n_items, i0 + per);
      for (int64_t step = 0; step < n_steps; ++step) {
        if (i0 < i1) body(step, i0, i1);
#pragma omp barrier
      }
    }
    return;
  }
#endif
  for (int64_t step = 0; step < n_steps; ++step) body(step, int64_t(0), n_items);
}

}  // namespace CPU_CAPABILITY
}  // namespace cpu
}  // namespace lstm_fused
