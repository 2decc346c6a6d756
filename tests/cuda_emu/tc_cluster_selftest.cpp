// The thread-block-cluster primitives of csrc/cuda/tc_primitives.cuh (cluster_ctarank,
// cluster_sync, map_shared_rank, map_shared_cluster + ld/st_shared_cluster), driven from stdin.
// Built with g++ -DLSTM_FUSED_CUDA_EMULATION it runs the CPU emulation (launch_cluster of
// tests/cuda_emu/cuda_emulation.h); built with nvcc for sm_90 (nvcc -x cu -std=c++17
// -arch=sm_90 -Icsrc tests/cuda_emu/tc_cluster_selftest.cpp) the same kernels run on a GPU with
// a cluster launch. tests/test_tc_cluster_emulation.py computes the expected answers itself.
//
// stdin, whitespace separated, decimal:
//   exchange <clusters> <cluster size>
//       every block stores into the shared memory of rank (r + 1) % C (half of the values
//       through map_shared_rank, half through st_shared_cluster_f32), cluster_sync, reads its
//       own shared memory; then stores into its own, cluster_sync, loads from rank (r + 2) % C
//       (half through each path). -> one line per block:
//       "<block> <rank> <nctarank> <N values received> <N values loaded>"
//   reduce_scatter <clusters> <cluster size> <steps>
//       per step every block writes a partial P[s][block][j][i] (j: destination rank, i < N)
//       into double-buffered shared memory, one cluster barrier (arrive ... wait), then sums
//       over the cluster's blocks the partials destined to its own rank (remote loads) ->
//       one line per (step, block): "<step> <block> <N sums>"
//   bad_rank    maps a pointer to rank 2 of a cluster of 2: the emulation reports and aborts
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "cuda/tc_primitives.cuh"

#if !defined(LSTM_FUSED_CUDA_EMULATION)
#include <cuda_runtime.h>
#define LSTM_FUSED_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace tc = lstm_fused::cuda::tc;

namespace {

constexpr int kThreads = 64;
constexpr int kN = 64;          // values per block and message
constexpr int kMaxCluster = 8;
constexpr int kMaxBlocks = 32;
constexpr int kMaxSteps = 8;

#if LSTM_FUSED_TC_HAS_CLUSTERS
// The value block b (rank r) sends: distinct for every (b, i), exact in float.
__device__ __forceinline__ float sent(int b, int i) { return static_cast<float>(b * 1000 + i); }
// Partial of block b for destination rank j at step s.
__device__ __forceinline__ float partial(int s, int b, int j, int i) {
  return static_cast<float>(s * 100000 + b * 1000 + j * 100 + i);
}
#endif

struct Io {
  int cluster_size, steps;
  unsigned rank[kMaxBlocks], nrank[kMaxBlocks];
  float received[kMaxBlocks][kN];
  float loaded[kMaxBlocks][kN];
  float sums[kMaxSteps][kMaxBlocks][kN];
};

__global__ void exchange_kernel(Io* io) {
#if LSTM_FUSED_TC_HAS_CLUSTERS
  LSTM_FUSED_DYNAMIC_SHARED(smem);
  float* inbox = reinterpret_cast<float*>(smem);  // kN floats
  float* outbox = inbox + kN;                     // kN floats
  const int b = blockIdx.x, t = threadIdx.x;
  const unsigned r = tc::cluster_ctarank(), c = tc::cluster_nctarank();
  if (t == 0) {
    io->rank[b] = r;
    io->nrank[b] = c;
  }
  tc::cluster_sync();  // every block of the cluster runs before anyone touches its memory
  // 1. remote stores into rank (r + 1) % c
  const unsigned next = (r + 1) % c;
  for (int i = t; i < kN; i += kThreads) {
    if (i % 2 == 0)
      tc::map_shared_rank(inbox, next)[i] = sent(b, i);
    else
      tc::st_shared_cluster_f32(tc::map_shared_cluster(inbox, next) + 4 * i, sent(b, i));
  }
  tc::cluster_sync();
  for (int i = t; i < kN; i += kThreads) io->received[b][i] = inbox[i];
  // 2. local stores, remote loads from rank (r + 2) % c
  for (int i = t; i < kN; i += kThreads) outbox[i] = sent(b, i);
  tc::cluster_sync();
  const unsigned from = (r + 2) % c;
  const tc::dsmem_addr remote = tc::map_shared_cluster(outbox, from);
  const float* remote_ptr = tc::map_shared_rank(outbox, from);
  for (int i = t; i < kN; i += kThreads)
    io->loaded[b][i] = i % 2 ? remote_ptr[i] : tc::ld_shared_cluster_f32(remote + 4 * i);
  tc::cluster_sync();  // nobody exits while another block still reads its shared memory
#else
  __trap();  // built for an architecture without clusters: never launched there
#endif
}

__global__ void reduce_scatter_kernel(Io* io) {
#if LSTM_FUSED_TC_HAS_CLUSTERS
  LSTM_FUSED_DYNAMIC_SHARED(smem);
  const int C = io->cluster_size;
  float* parts = reinterpret_cast<float*>(smem);  // [2][C][kN]
  const int b = blockIdx.x, t = threadIdx.x;
  const unsigned r = tc::cluster_ctarank();
  tc::cluster_sync();
  for (int s = 0; s < io->steps; ++s) {
    float* mine = parts + (s % 2) * C * kN;
    for (int e = t; e < C * kN; e += kThreads) mine[e] = partial(s, b, e / kN, e % kN);
    // Double-buffered: the step s - 1 reads of this buffer's other half ended before anyone
    // passed the step s barrier, so one barrier per step suffices.
    tc::cluster_arrive();
    tc::cluster_wait();
    for (int i = t; i < kN; i += kThreads) {
      float sum = 0.f;
      for (int k = 0; k < C; ++k) {
        const unsigned src = (r + static_cast<unsigned>(k)) % C;  // staggered: not all on rank 0
        sum += tc::ld_shared_cluster_f32(tc::map_shared_cluster(mine + r * kN + i, src));
      }
      io->sums[s][b][i] = sum;
    }
  }
  tc::cluster_sync();
#else
  __trap();
#endif
}

#if defined(LSTM_FUSED_CUDA_EMULATION)
__global__ void bad_rank_kernel(Io* io) {
  LSTM_FUSED_DYNAMIC_SHARED(smem);
  float* p = tc::map_shared_rank(reinterpret_cast<float*>(smem), 2u);
  io->loaded[0][0] = p[0];
}
#endif

void run(void (*kernel)(Io*), Io* io, int blocks, int cluster, size_t smem) {
#if defined(LSTM_FUSED_CUDA_EMULATION)
  lstm_fused_emulation::launch_cluster(kernel, dim3(blocks), dim3(kThreads),
                                       static_cast<unsigned>(cluster), smem, io);
#else
  Io* dev = nullptr;
  auto check = [](cudaError_t e) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "tc_cluster_selftest: %s\n", cudaGetErrorString(e));
      std::exit(3);
    }
  };
  check(cudaMalloc(&dev, sizeof(Io)));
  check(cudaMemcpy(dev, io, sizeof(Io), cudaMemcpyHostToDevice));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  check(cudaLaunchKernelEx(&config, kernel, dev));
  check(cudaGetLastError());
  check(cudaDeviceSynchronize());
  check(cudaMemcpy(io, dev, sizeof(Io), cudaMemcpyDeviceToHost));
  check(cudaFree(dev));
#endif
}

int read_int(std::istream& in) {
  int v;
  if (!(in >> v)) {
    std::fprintf(stderr, "tc_cluster_selftest: input ended early\n");
    std::exit(2);
  }
  return v;
}

}  // namespace

int main() {
  std::string op;
  std::cin >> op;
  static Io io{};
  if (op == "exchange" || op == "reduce_scatter") {
    const int clusters = read_int(std::cin), size = read_int(std::cin);
    io.cluster_size = size;
    io.steps = op == "reduce_scatter" ? read_int(std::cin) : 0;
    const int blocks = clusters * size;
    if (size < 1 || size > kMaxCluster || blocks > kMaxBlocks || io.steps > kMaxSteps) {
      std::fprintf(stderr, "tc_cluster_selftest: at most %d blocks, clusters of %d, %d steps\n",
                   kMaxBlocks, kMaxCluster, kMaxSteps);
      return 2;
    }
    if (op == "exchange") {
      run(&exchange_kernel, &io, blocks, size, 2 * kN * sizeof(float));
      for (int b = 0; b < blocks; ++b) {
        std::printf("%d %u %u", b, io.rank[b], io.nrank[b]);
        for (int i = 0; i < kN; ++i) std::printf(" %.1f", io.received[b][i]);
        for (int i = 0; i < kN; ++i) std::printf(" %.1f", io.loaded[b][i]);
        std::printf("\n");
      }
    } else {
      run(&reduce_scatter_kernel, &io, blocks, size, 2 * size * kN * sizeof(float));
      for (int s = 0; s < io.steps; ++s)
        for (int b = 0; b < blocks; ++b) {
          std::printf("%d %d", s, b);
          for (int i = 0; i < kN; ++i) std::printf(" %.1f", io.sums[s][b][i]);
          std::printf("\n");
        }
    }
  } else if (op == "bad_rank") {
#if defined(LSTM_FUSED_CUDA_EMULATION)
    run(&bad_rank_kernel, &io, 2, 2, 64);
    std::printf("returned\n");
#else
    std::fprintf(stderr, "tc_cluster_selftest: bad_rank is the emulation's\n");
    return 2;
#endif
  } else {
    std::fprintf(stderr, "tc_cluster_selftest: unknown operation '%s'\n", op.c_str());
    return 2;
  }
  return 0;
}
