// Compile-check shim (tests/test_cuda_compile.py only; never used by a real build).
// The CUDA toolkit on the CPU CI machine has no cuBLAS headers; torch's ATen/cuda/CUDAContext.h
// includes them for a few handle types. Only those names are declared here: a source that calls
// cuBLAS itself fails the compile check (undeclared), it never passes it wrongly.
#pragma once
typedef struct cublasContext* cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
