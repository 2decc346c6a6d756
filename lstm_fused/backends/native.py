"""backend="cpu" and backend="cuda": the C++ operators of lstm_fused._C.

Both call the same registered operator (torch.ops.lstm_fused.lstm_layer_forward); the
dispatcher picks the CPU or the CUDA kernel from the device of the tensors.
"""
from __future__ import annotations

import torch

from .. import _ops
from .base import LSTMLayerBackend, needs_grad


class _NativeLSTM(LSTMLayerBackend):
    device_type = ""
    dispatch_key = ""
    dtypes: tuple = ()

    def unavailable_reason(self):
        if _ops.LOAD_ERROR is not None:
            return _ops.LOAD_ERROR
        if not _ops.has_kernel("lstm_layer_forward", self.dispatch_key):
            return (f"lstm_fused._C was built without {self.dispatch_key} kernels "
                    f"(see README: building with CUDA)")
        return None

    def unsupported_reason(self, device, dtype, **features):
        if device.type != self.device_type:
            return f"it runs on {self.device_type} tensors, got a tensor on {device}"
        if dtype not in self.dtypes:
            names = ", ".join(str(d).replace("torch.", "") for d in self.dtypes)
            return f"dtype {str(dtype).replace('torch.', '')} is not supported (supported: {names})"
        return None

    def lstm_layer(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
        args = (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths)
        if not needs_grad(args) and _ops.has_kernel("lstm_layer_inference", self.dispatch_key):
            return torch.ops.lstm_fused.lstm_layer_inference(*args)
        y, h_n, c_n, _gates, _cells = torch.ops.lstm_fused.lstm_layer_forward(*args)
        return y, h_n, c_n

    def attentive_inference(self, *args):
        if not _ops.has_kernel("attentive_lstm_inference", self.dispatch_key):
            return None
        return torch.ops.lstm_fused.attentive_lstm_inference(*args)


class CPULSTM(_NativeLSTM):
    name = "cpu"
    device_type = "cpu"
    dispatch_key = "CPU"
    dtypes = (torch.float32, torch.float64)


class CUDALSTM(_NativeLSTM):
    """The CUDA C++ kernels (csrc/cuda/): float32, float16, bfloat16 (fp32 accumulation), and
    float64 on the gate-kernel path (slow; it exists so that gradcheck can run on the GPU).
    Projection, peepholes, variable lengths and both directions are supported. Which loop runs
    is decided in C++ per call (csrc/cuda/lstm_layer_cuda.cpp): per-step GEMM + fused gate
    kernel by default; with LSTM_FUSED_CUDA_PATH=persistent, one cooperative launch for the
    whole sequence when there is no projection and W_hh fits in the GPU's shared memory."""

    name = "cuda"
    device_type = "cuda"
    dispatch_key = "CUDA"
    dtypes = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    # Features of a layer call (functional.lstm_layer) that the kernels implement.
    features = frozenset({"proj", "peephole", "lengths"})

    def unavailable_reason(self):
        reason = super().unavailable_reason()
        if reason is None and not torch.cuda.is_available():
            reason = "no CUDA device is available to PyTorch"
        return reason

    def unsupported_reason(self, device, dtype, **features):
        reason = super().unsupported_reason(device, dtype, **features)
        if reason is not None:
            return reason
        unknown = sorted(k for k, wanted in features.items() if wanted and k not in self.features)
        if unknown:
            return (f"the CUDA kernels do not implement {', '.join(unknown)} "
                    f"(they implement: {', '.join(sorted(self.features))})")
        return None
