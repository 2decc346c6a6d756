// Operator schemas of the attention family (docs/contract.md, section 2):
// csrc/attention_schemas.h, which also gives the layouts. Argument checks:
// csrc/attention_args.h. Kernels: csrc/cpu/attention_cpu.cpp and csrc/cuda/attention_cuda.cpp
// (with csrc/cuda/attention_kernels.cuh); fake kernels and autograd: the op family's Python
// module (lstm_fused/ops/attention.py).
#include <torch/library.h>

#include "attention_schemas.h"

TORCH_LIBRARY_FRAGMENT(lstm_fused, m) { lstm_fused::define_attention_ops(m); }
