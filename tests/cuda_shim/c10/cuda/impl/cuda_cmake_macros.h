// Compile-check shim (tests/test_cuda_compile.py only; never used by a real build).
// A CUDA build of torch generates this header at build time; the CPU wheel lacks it. The
// CUDA part of c10 is a shared library in every torch wheel, hence the one macro below.
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
