// Operator schemas of the multi-head self-attention core (op family "self_attention"):
// csrc/attention_schemas.h (define_mhsa_ops). Kernels: csrc/cpu/mhsa_cpu.cpp (CPU),
// csrc/cuda/mhsa_cuda.cpp with csrc/cuda/mhsa_kernels.cuh (CUDA); fake kernels and autograd:
// the op family's Python module (lstm_fused/ops/self_attention.py).
// Shapes and checks: csrc/mhsa_args.h.
#include <torch/library.h>

#include "attention_schemas.h"

TORCH_LIBRARY_FRAGMENT(lstm_fused, m) { lstm_fused::define_mhsa_ops(m); }
