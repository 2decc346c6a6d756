"""backend="triton": the Triton kernels of lstm_fused.triton_kernels.

Triton is imported only when the backend is first asked about or used, so `import lstm_fused`
works without Triton installed. The kernels run on CUDA tensors; on CPU tensors only under
Triton's interpreter (TRITON_INTERPRET=1, set before the first use), which is for tests.
Which shapes take the fused-sequence kernel and which the step path:
lstm_fused/triton_kernels/tuning.py (choose_path).
"""
from __future__ import annotations

import os

import torch

from . import register
from .base import LSTMLayerBackend, needs_grad

_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonLSTM(LSTMLayerBackend):
    name = "triton"

    def unavailable_reason(self):
        try:
            import triton  # noqa: F401
        except ImportError as exc:
            return f"triton is not installed ({exc}); pip install triton"
        if not torch.cuda.is_available() and not _interpreting():
            return ("no CUDA device is available to PyTorch (Triton's interpreter, "
                    "TRITON_INTERPRET=1, runs the kernels on the CPU for tests)")
        return None

    def unsupported_reason(self, device, dtype, **features):
        device = torch.device(device)
        if device.type == "cpu" and not _interpreting():
            return ("it runs on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1); "
                    "got CPU tensors: use backend='cpu', or CUDA tensors")
        if device.type not in ("cuda", "cpu"):
            return f"it runs on CUDA tensors, got a tensor on {device}"
        if dtype not in _DTYPES:
            return (f"dtype {str(dtype).replace('torch.', '')} is not supported (supported: "
                    f"float32, float16, bfloat16, float64)")
        return None

    def lstm_layer(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
        from ..triton_kernels import lstm_layer  # noqa: F401  (registers the ops on first use)

        args = (x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths)
        if not needs_grad(args):  # nothing kept for a backward
            return torch.ops.lstm_fused.triton_lstm_layer_inference(*args)
        y, h_n, c_n, _gates, _cells = torch.ops.lstm_fused.triton_lstm_layer_forward(*args)
        return y, h_n, c_n

    def attentive_inference(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths,
                            proj_weight, proj_bias, v, qproj, chunk_size):
        from ..triton_kernels import lstm_layer
        from ..triton_kernels.launch_config import device_target

        H, R, A = w_hh.shape[1] // 4, w_hh.shape[2], proj_weight.shape[0]
        if not lstm_layer.attentive_supported(H, R, A, w_hr is not None, x.dtype,
                                              device_target(x.device)):
            return None
        return torch.ops.lstm_fused.triton_attentive_lstm_inference(
            x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj,
            chunk_size)


register(TritonLSTM())
