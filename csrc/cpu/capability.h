// Which CPU capability (vector instruction set) this translation unit of CPU kernel code is.
//
// The kernel sources of csrc/cpu (every <family>_cpu.cpp and the headers they include) are
// compiled once per capability, as ATen compiles its own CPU kernels:
//   DEFAULT  with the compiler's baseline flags (built with the other sources, no macro given)
//   AVX2     with -DCPU_CAPABILITY=AVX2 -DCPU_CAPABILITY_AVX2 -mavx2 -mfma -mf16c
//   AVX512   with -DCPU_CAPABILITY=AVX512 -DCPU_CAPABILITY_AVX512 -mavx512{f,bw,vl,dq} ...
// (setup.py, _CPU_VARIANTS). Everything such a unit defines lives in the namespace
// lstm_fused::cpu::CPU_CAPABILITY (DEFAULT, AVX2 or AVX512), and at::vec puts its Vectorized
// in at::vec::CPU_CAPABILITY, so the variants never share a symbol; csrc/cpu/dispatch.cpp, built
// without ISA flags, picks the variant the CPU can run at the first call. The macros select
// ATen's AVX2 / AVX-512 Vectorized, so this header comes before any ATen header.
//
// Such a unit must define no object with dynamic initialisation: an initialiser runs when the
// library loads, on any CPU (setup.py checks the objects it builds for it).
#pragma once

#if !defined(CPU_CAPABILITY)
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#endif

#if defined(CPU_CAPABILITY_AVX512) && !(defined(__AVX512F__) && defined(__AVX512BW__) && \
                                        defined(__AVX512VL__) && defined(__AVX512DQ__))
#error "CPU_CAPABILITY_AVX512 needs -mavx512f -mavx512bw -mavx512vl -mavx512dq (setup.py)"
#endif
#if defined(CPU_CAPABILITY_AVX2) && !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
#error "CPU_CAPABILITY_AVX2 needs -mavx2 -mfma -mf16c (setup.py)"
#endif
