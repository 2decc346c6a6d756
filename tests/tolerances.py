"""The one tolerance table of the tests: how far a result may lie from the float64 reference
(lstm_fused/reference.py) or from nn.LSTM, per kind of computation and dtype.

TOL[kind][dtype] is dict(atol=..., rtol=...), the arguments of torch.testing.assert_close;
tol(kind, dtype) returns it. Kinds (where the math differs, so does the table):

- "lstm": lstm_fused.LSTM / LSTMCell or one layer against nn.LSTM or the reference, sizes of
  the tests (T <= ~20, values O(1)): float64 compares two exact-to-rounding computations;
  float32 carries about 1e-7 relative rounding per operation through the recurrence.
- "cuda_kernel": the CUDA kernels' outputs and gradients against the float64 reference (the
  LSTM layer after T steps), inputs rounded to the dtype first; atol is taken times
  max(1, max |expected|) (helpers.assert_close_scaled): tests/test_cuda_lstm.py, and the
  kernels emulated on the CPU in tests/test_cuda_emulated.py.
- "triton_lstm", "triton_lstm_gpu": the Triton LSTM kernels, max abs error over
  max(1, max |reference|) (rtol 0); float32 under the interpreter (exact IEEE products) and on
  a GPU (TF32-free dots, but other summation orders).
- "attention": masked softmax, additive attention pooling, channel attention, self-attention
  modules: one pass of sums, no recurrence.
- "attention_online": the same ops where float32 is summed in another order (blocked or
  online softmax: the Triton kernels, the attentive LSTM's fused layer + pooling).
- "mhsa": the scaled-dot-product core operators (mhsa_forward), rtol = atol.
- "cell_math": the C++ cell math header (csrc/lstm_cell_math.h) per storage type against
  float64: it rounds each output once (plus the rounding of its inputs, which the reference
  sees too), so a unit roundoff.
- "float64_same_math": two float64 computations of the same math in nearly the same order
  (the reference math against nn.LSTM or autograd through torch.func, double backward).
- "frozen": FrozenLSTM (lstm_fused.freeze_for_inference) against the float64 LSTM it was
  frozen from, keyed by its weights dtype (torch.qint8 for int8): float32 as "lstm"; bfloat16
  and int8 the errors docs/contract.md states ("Frozen inference"), for the tests' sizes.
- "frozen_emulation": the frozen kernel against reference_frozen's exact math in float64
  (same rounded weights and activations): float32 rounding, plus where a float32 difference
  moves an activation across a bfloat16 or int8 rounding boundary (one step of it, times a
  weight, in one term of z).
- "autocast": under torch.autocast against nn.LSTM under the same autocast: two ulps at 1
  (2 * eps of the dtype). Measured on the CPU (bfloat16, T = 12): outputs differ from
  nn.LSTM's by at most 0.005 (eps = 0.0078), each computing with its own rounding order; the
  CUDA float16 cases have not been measured on a GPU.
"""

from __future__ import annotations

import torch

f64, f32, f16, bf16 = torch.float64, torch.float32, torch.float16, torch.bfloat16


def _same(**by_dtype):
    """{dtype: dict(atol=t, rtol=t)} from dtype names to one number."""
    return {getattr(torch, name): dict(atol=t, rtol=t) for name, t in by_dtype.items()}


_ATTENTION = {
    f64: dict(atol=1e-12, rtol=1e-10),
    f32: dict(atol=2e-6, rtol=2e-5),
    f16: dict(atol=2e-3, rtol=5e-3),
    bf16: dict(atol=1.6e-2, rtol=2e-2),
}
_TRITON_LSTM = {
    f64: dict(atol=1e-12, rtol=0),
    f32: dict(atol=1e-5, rtol=0),
    f16: dict(atol=5e-3, rtol=0),
    bf16: dict(atol=4e-2, rtol=0),
}

TOL = {
    "lstm": {
        f64: dict(atol=1e-10, rtol=1e-9),
        f32: dict(atol=2e-5, rtol=2e-5),
        f16: dict(atol=2e-3, rtol=2e-3),
        bf16: dict(atol=2e-2, rtol=2e-2),
    },
    "cuda_kernel": _same(float64=1e-10, float32=2e-5, float16=1e-2, bfloat16=6e-2),
    "triton_lstm": _TRITON_LSTM,
    "triton_lstm_gpu": {**_TRITON_LSTM, f32: dict(atol=2e-5, rtol=0)},
    "attention": _ATTENTION,
    "attention_online": {**_ATTENTION, f32: dict(atol=1e-5, rtol=1e-4)},
    "mhsa": _same(float64=1e-12, float32=2e-6, float16=2e-3, bfloat16=2e-2),
    "cell_math": {
        f64: dict(atol=1e-12, rtol=1e-12),
        f32: dict(atol=2e-6, rtol=2e-6),
        f16: dict(atol=2**-10, rtol=2**-10),
        bf16: dict(atol=2**-7, rtol=2**-7),
    },
    "float64_same_math": {f64: dict(atol=1e-12, rtol=1e-10)},
    "frozen": {
        f32: dict(atol=2e-5, rtol=2e-5),
        bf16: dict(atol=5e-3, rtol=0),
        torch.qint8: dict(atol=1e-2, rtol=0),
    },
    "frozen_emulation": {
        f32: dict(atol=2e-5, rtol=2e-5),
        bf16: dict(atol=2e-3, rtol=0),
        torch.qint8: dict(atol=2e-3, rtol=0),
    },
    "autocast": {
        dt: dict(atol=2 * torch.finfo(dt).eps, rtol=2 * torch.finfo(dt).eps) for dt in (bf16, f16)
    },
}


def tol(kind: str, dtype: torch.dtype) -> dict:
    """dict(atol=, rtol=) for results of `kind` in `dtype` (see the module docstring)."""
    return dict(TOL[kind][dtype])
