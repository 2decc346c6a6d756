// Compile-check shim (tests/test_cuda_compile.py only; never used by a real build).
// A CUDA build of torch generates this header; the CPU wheel lacks it. Values of a plain
// CUDA (not ROCm) build with cuDNN.
#pragma once
#define AT_CUDNN_ENABLED() 1
#define AT_CUSPARSELT_ENABLED() 0
#define AT_HIPSPARSELT_ENABLED() 0
#define AT_ROCM_ENABLED() 0
#define AT_MAGMA_ENABLED() 0
#define NVCC_FLAGS_EXTRA ""
