// One warp (or two blocks) of the tensor-core primitives of csrc/cuda/tc_primitives.cuh, driven
// from stdin. Built with g++ -DLSTM_FUSED_CUDA_EMULATION it runs the CPU emulation, and
// tests/test_tc_emulation.py checks the answers against its own transcription of the PTX ISA
// fragment figures. Built with nvcc (nvcc -x cu -std=c++17 -arch=sm_80 or sm_90 -Icsrc
// tests/cuda_emu/tc_selftest.cpp) the same kernels run on a GPU with the same input and output,
// so a device's answers can be compared with the emulator's on the same random inputs.
//
// stdin, whitespace separated, numbers in hex:
//   mma_bf16 | mma_f16   then 32 lanes x (a0 a1 a2 a3 b0 b1 c0 c1 c2 c3), c as float bits
//                        -> 32 lines "d0 d1 d2 d3" (float bits)
//   ldmatrix | ldmatrix_trans   then n, n 16-bit values (the shared-memory image), then 32
//                        element offsets (lane l's row address)  -> 32 lines "r0 r1 r2 r3"
//   flags <steps>        producer / consumer through double-buffered data and acquire/release
//                        flags -> "ok <values checked>" or "bad ..."
//   flag_timeout <ms>    waits for a flag nobody sets, with the spin bounded to <ms>: the
//                        emulation reports and aborts
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "cuda/tc_primitives.cuh"

#if !defined(LSTM_FUSED_CUDA_EMULATION)
#include <cuda_runtime.h>
#define LSTM_FUSED_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

namespace tc = lstm_fused::cuda::tc;

namespace {

__device__ __forceinline__ float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

__device__ __forceinline__ uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

__device__ __forceinline__ void add_one(unsigned long long* p) {
#if defined(LSTM_FUSED_CUDA_EMULATION)
  __atomic_add_fetch(p, 1ull, __ATOMIC_RELAXED);
#else
  atomicAdd(p, 1ull);
#endif
}

// Runs kernel(io) on `blocks` blocks of 32 threads with `smem` bytes of dynamic shared memory:
// emulated, or on the GPU with io copied there and back.
template <typename Io>
void run(void (*kernel)(Io*), Io* io, int blocks, size_t smem) {
#if defined(LSTM_FUSED_CUDA_EMULATION)
  lstm_fused_emulation::launch_cooperative(kernel, dim3(blocks), dim3(32), smem, io);
#else
  Io* dev = nullptr;
  auto check = [](cudaError_t e) {
    if (e != cudaSuccess) {
      std::fprintf(stderr, "tc_selftest: %s\n", cudaGetErrorString(e));
      std::exit(3);
    }
  };
  check(cudaMalloc(&dev, sizeof(Io)));
  check(cudaMemcpy(dev, io, sizeof(Io), cudaMemcpyHostToDevice));
  kernel<<<blocks, 32, smem>>>(dev);
  check(cudaGetLastError());
  check(cudaDeviceSynchronize());
  check(cudaMemcpy(io, dev, sizeof(Io), cudaMemcpyDeviceToHost));
  check(cudaFree(dev));
#endif
}

struct MmaIo {
  uint32_t in[32][10];
  uint32_t out[32][4];
  bool bf16;
};

__global__ void mma_kernel(MmaIo* io) {
  const int l = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) a[i] = io->in[l][i];
  for (int i = 0; i < 2; ++i) b[i] = io->in[l][4 + i];
  for (int i = 0; i < 4; ++i) c[i] = bits_to_float(io->in[l][6 + i]);
  if (io->bf16)
    tc::mma_16816<c10::BFloat16>(d, a, b, c);
  else
    tc::mma_16816<c10::Half>(d, a, b, c);
  for (int i = 0; i < 4; ++i) io->out[l][i] = float_to_bits(d[i]);
}

constexpr int kMaxImage = 4096;

struct LdIo {
  uint16_t image[kMaxImage];
  unsigned size;
  unsigned offset[32];
  uint32_t out[32][4];
  bool trans;
};

__global__ void ldmatrix_kernel(LdIo* io) {
  LSTM_FUSED_DYNAMIC_SHARED(smem);
  auto* s = reinterpret_cast<uint16_t*>(smem);
  for (unsigned i = threadIdx.x; i < io->size; i += 32) s[i] = io->image[i];
  __syncwarp();
  uint32_t r[4];
  const uint16_t* row = s + io->offset[threadIdx.x];
  if (io->trans)
    tc::ldmatrix_x4_trans(r, row);
  else
    tc::ldmatrix_x4(r, row);
  for (int j = 0; j < 4; ++j) io->out[threadIdx.x][j] = r[j];
}

struct FlagIo {
  unsigned data[2][64];
  unsigned ready;   // producer -> consumer: steps published
  unsigned acked;   // consumer -> producer: steps read
  int steps;
  unsigned long long checked;
  unsigned long long bad;
};

// Block 0 produces step s into slot s % 2 once the consumer has read step s - 2 from it; block 1
// consumes. Every lane of the consumer reads values other lanes of the producer wrote.
__global__ void flag_kernel(FlagIo* io) {
  const unsigned lane = threadIdx.x;
  for (int s = 0; s < io->steps; ++s) {
    unsigned* slot = io->data[s % 2];
    if (blockIdx.x == 0) {
      if (s >= 2) {
        if (lane == 0) tc::wait_geq_acquire(&io->acked, static_cast<unsigned>(s - 1));
        __syncwarp();
      }
      slot[lane] = static_cast<unsigned>(s * 1000) + lane;
      slot[32 + lane] = static_cast<unsigned>(s * 1000) + 32 + lane;
      __syncthreads();
      if (lane == 0) tc::st_release_gpu(&io->ready, static_cast<unsigned>(s + 1));
    } else {
      if (lane < 4) tc::wait_geq_acquire(&io->ready, static_cast<unsigned>(s + 1));
      __syncwarp();
      const unsigned other = (lane * 7 + 3) % 64;  // a value another lane wrote
      const bool ok = slot[other] == static_cast<unsigned>(s * 1000) + other;
      __syncthreads();
      if (!ok) add_one(&io->bad);
      add_one(&io->checked);
      __syncthreads();  // every lane has read slot s % 2
      if (lane == 0) tc::st_release_gpu(&io->acked, static_cast<unsigned>(s + 1));
    }
  }
}

#if defined(LSTM_FUSED_CUDA_EMULATION)
__global__ void never_set_kernel(unsigned* flag) {
  if (threadIdx.x == 0) tc::wait_geq_acquire(flag, 1u);
}
#endif

uint32_t read_hex(std::istream& in) {
  std::string s;
  if (!(in >> s)) {
    std::fprintf(stderr, "tc_selftest: input ended early\n");
    std::exit(2);
  }
  return static_cast<uint32_t>(std::stoul(s, nullptr, 16));
}

}  // namespace

int main() {
  std::string op;
  std::cin >> op;
  if (op == "mma_bf16" || op == "mma_f16") {
    MmaIo io{};
    io.bf16 = op == "mma_bf16";
    for (auto& lane : io.in)
      for (auto& w : lane) w = read_hex(std::cin);
    run(&mma_kernel, &io, 1, 0);
    for (auto& lane : io.out) std::printf("%x %x %x %x\n", lane[0], lane[1], lane[2], lane[3]);
  } else if (op == "ldmatrix" || op == "ldmatrix_trans") {
    static LdIo io{};
    io.trans = op == "ldmatrix_trans";
    io.size = read_hex(std::cin);
    if (io.size > kMaxImage) {
      std::fprintf(stderr, "tc_selftest: at most %d values\n", kMaxImage);
      return 2;
    }
    for (unsigned i = 0; i < io.size; ++i) io.image[i] = static_cast<uint16_t>(read_hex(std::cin));
    for (auto& o : io.offset) o = read_hex(std::cin);
    run(&ldmatrix_kernel, &io, 1, io.size * 2);
    for (auto& lane : io.out) std::printf("%x %x %x %x\n", lane[0], lane[1], lane[2], lane[3]);
  } else if (op == "flags") {
    FlagIo io{};
    io.steps = static_cast<int>(read_hex(std::cin));
    run(&flag_kernel, &io, 2, 0);  // on a GPU both blocks are resident (two SMs at least)
    if (io.bad) std::printf("bad %llu of %llu\n", io.bad, io.checked);
    else std::printf("ok %llu\n", io.checked);
  } else if (op == "flag_timeout") {
#if defined(LSTM_FUSED_CUDA_EMULATION)
    lstm_fused_emulation::tc_spin_timeout_ms = static_cast<long>(read_hex(std::cin));
    unsigned flag = 0;
    run(&never_set_kernel, &flag, 1, 0);
    std::printf("returned\n");
#else
    std::fprintf(stderr, "tc_selftest: flag_timeout is the emulation's (a GPU would hang)\n");
    return 2;
#endif
  } else {
    std::fprintf(stderr, "tc_selftest: unknown operation '%s'\n", op.c_str());
    return 2;
  }
  return 0;
}
