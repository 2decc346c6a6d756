// One warp (or two blocks) of the emulated tensor-core primitives of csrc/cuda/tc_primitives.cuh,
// driven from stdin by tests/test_tc_emulation.py, which checks the answers against its own
// transcription of the PTX ISA fragment figures. Built with g++ -DLSTM_FUSED_CUDA_EMULATION.
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
#include <vector>

#include "cuda/tc_primitives.cuh"

namespace tc = lstm_fused::cuda::tc;

namespace {

struct MmaIo {
  uint32_t in[32][10];
  uint32_t out[32][4];
  bool bf16;
};

void mma_kernel(MmaIo* io) {
  const int l = threadIdx.x;
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) a[i] = io->in[l][i];
  for (int i = 0; i < 2; ++i) b[i] = io->in[l][4 + i];
  for (int i = 0; i < 4; ++i) c[i] = lstm_fused_emulation::tc_bits_to_float(io->in[l][6 + i]);
  if (io->bf16)
    tc::mma_16816<c10::BFloat16>(d, a, b, c);
  else
    tc::mma_16816<c10::Half>(d, a, b, c);
  for (int i = 0; i < 4; ++i) io->out[l][i] = lstm_fused_emulation::tc_float_to_bits(d[i]);
}

struct LdIo {
  std::vector<uint16_t> image;
  unsigned offset[32];
  uint32_t out[32][4];
  bool trans;
};

void ldmatrix_kernel(LdIo* io) {
  LSTM_FUSED_DYNAMIC_SHARED(smem);
  auto* s = reinterpret_cast<uint16_t*>(smem);
  if (threadIdx.x == 0) std::memcpy(s, io->image.data(), io->image.size() * 2);
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
  long checked;
  long bad;
};

// Block 0 produces step s into slot s % 2 once the consumer has read step s - 2 from it; block 1
// consumes. Every lane of the consumer reads values other lanes of the producer wrote.
void flag_kernel(FlagIo* io) {
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
      if (!ok) __atomic_add_fetch(&io->bad, 1, __ATOMIC_RELAXED);
      __atomic_add_fetch(&io->checked, 1, __ATOMIC_RELAXED);
      __syncthreads();  // every lane has read slot s % 2
      if (lane == 0) tc::st_release_gpu(&io->acked, static_cast<unsigned>(s + 1));
    }
  }
}

void never_set_kernel(unsigned* flag) {
  if (threadIdx.x == 0) tc::wait_geq_acquire(flag, 1u);
}

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
    lstm_fused_emulation::launch_cooperative(&mma_kernel, dim3(1), dim3(32), 0, &io);
    for (auto& lane : io.out) std::printf("%x %x %x %x\n", lane[0], lane[1], lane[2], lane[3]);
  } else if (op == "ldmatrix" || op == "ldmatrix_trans") {
    LdIo io{};
    io.trans = op == "ldmatrix_trans";
    io.image.resize(read_hex(std::cin));
    for (auto& v : io.image) v = static_cast<uint16_t>(read_hex(std::cin));
    for (auto& o : io.offset) o = read_hex(std::cin);
    lstm_fused_emulation::launch_cooperative(&ldmatrix_kernel, dim3(1), dim3(32),
                                             io.image.size() * 2, &io);
    for (auto& lane : io.out) std::printf("%x %x %x %x\n", lane[0], lane[1], lane[2], lane[3]);
  } else if (op == "flags") {
    FlagIo io{};
    io.steps = static_cast<int>(read_hex(std::cin));
    lstm_fused_emulation::launch_cooperative(&flag_kernel, dim3(2), dim3(32), 0, &io);
    if (io.bad) std::printf("bad %ld of %ld\n", io.bad, io.checked);
    else std::printf("ok %ld\n", io.checked);
  } else if (op == "flag_timeout") {
    lstm_fused_emulation::tc_spin_timeout_ms = static_cast<long>(read_hex(std::cin));
    unsigned flag = 0;
    lstm_fused_emulation::launch_cooperative(&never_set_kernel, dim3(1), dim3(32), 0, &flag);
    std::printf("returned\n");
  } else {
    std::fprintf(stderr, "tc_selftest: unknown operation '%s'\n", op.c_str());
    return 2;
  }
  return 0;
}
