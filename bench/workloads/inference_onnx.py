"""CPU inference against what a user would deploy instead: nn.LSTM exported to ONNX and run by
onnxruntime. Family "inference_onnx", mode "fwd" (no_grad), float32.

Providers: nn.LSTM (the baseline), lstm_fused on each backend of the device, onnxruntime
running nn.LSTM exported by torch.onnx.export (the standard ONNX LSTM operator), and
onnxruntime running lstm_fused.LSTM exported the same way (absent where this build cannot
export it). onnxruntime uses as many intra-op threads as torch has (torch.get_num_threads(),
set by `python -m bench --threads N`), so both libraries get the same cores; it runs on the
CPU only (Unsupported on a GPU device). The exported graph has the case's fixed shapes, as a
deployment for one batch size would.

Deployment variants, each checked against the float64 reference with the error its docs
state (QUANTIZED_TOLERANCE) instead of float32's: lstm_fused's frozen LSTM
(lstm_fused.freeze_for_inference, weights packed once) with float32, bfloat16 and int8
weights ("lstm_fused:frozen(<weights>)"), and PyTorch's dynamically quantized LSTM
("torch.ao.dynamic(qint8)": torch.ao.quantization.quantize_dynamic, fbgemm's int8 kernels),
the int8 peer. `python -m bench --interleaved inference` times them all call by call in turn.

Inputs (T, B, I) like nn.LSTM's default, states start at zero; outputs (y, h_n, c_n).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from typing import List

import torch
from torch import nn

from .base import Absent, Impl, Options, Provider, Unsupported, load_module
from .lstm import LSTMWorkload


def _onnx_session(module: nn.Module, x: torch.Tensor):
    """An onnxruntime session of `module` exported with example input x (T, B, I)."""
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it)
        import onnxruntime as ort
    except ImportError as exc:
        raise Absent(f"{exc.name} is not installed (pip install onnx onnxruntime)") from exc
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "lstm.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript-based exporter: a few seconds, where dynamo=True takes ~20 s.
            torch.onnx.export(
                module,
                (x,),
                path,
                dynamo=False,
                input_names=["x"],
                output_names=["y", "h_n", "c_n"],
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _ort_impl(module: nn.Module, case, note: str) -> Impl:
    d = case.dims
    module = module.eval()
    example = torch.randn(d["T"], d["B"], d["I"])
    session = _onnx_session(module, example)

    def call(inputs):
        ys = session.run(None, {"x": inputs["x"].detach().contiguous().numpy()})
        return tuple(torch.from_numpy(y) for y in ys)

    return Impl(
        call,
        module,
        note=f"{note}; onnxruntime {__import__('onnxruntime').__version__}, "
        f"{torch.get_num_threads()} intra-op threads",
    )


# Normalised error (max |got - want| / max |want|, bench.runner.compare) a quantized provider
# may have, above the largest measured at the inference cases (T=100, I=H=256, L=2, B 1 to 32:
# bfloat16 0.005, int8 0.013, torch.ao.dynamic(qint8) 0.035; docs/contract.md, "Frozen
# inference"). int8's is shared by lstm_fused's and torch.ao's.
QUANTIZED_TOLERANCE = {"bfloat16": 1e-2, "qint8": 5e-2}


def _frozen_provider(weights: torch.dtype, sizes) -> Provider:
    I, H, L = sizes
    name = str(weights).replace("torch.", "")

    def build(case, state, dtype, device):
        import lstm_fused

        if device.type != "cpu" or dtype != torch.float32:
            raise Unsupported("the frozen LSTM: float32 inputs on the CPU")
        freeze = getattr(lstm_fused, "freeze_for_inference", None)
        if freeze is None:
            raise Absent("lstm_fused.freeze_for_inference is not in this build")
        frozen = freeze(load_module(nn.LSTM(I, H, L), state, dtype, device), weights)

        def call(inputs):
            y, (h, c) = frozen(inputs["x"])
            return y, h, c

        return Impl(
            call,
            None,
            note=f"lstm_fused.freeze_for_inference(weights={weights})",
            tolerance=QUANTIZED_TOLERANCE.get(name),
        )

    return Provider(f"lstm_fused:frozen({name})", build)


def _torch_dynamic_provider(sizes) -> Provider:
    I, H, L = sizes

    def build(case, state, dtype, device):
        if device.type != "cpu" or dtype != torch.float32:
            raise Unsupported("torch.ao dynamic quantization: float32 on the CPU")
        quantize = getattr(getattr(torch, "ao", None), "quantization", None)
        if quantize is None or "fbgemm" not in torch.backends.quantized.supported_engines:
            raise Absent("torch.ao.quantization with the fbgemm engine is not in this torch")
        module = load_module(nn.LSTM(I, H, L), state, dtype, device).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = "fbgemm"
            q = quantize.quantize_dynamic(nn.Sequential(module), {nn.LSTM}, dtype=torch.qint8)[0]

        def call(inputs):
            y, (h, c) = q(inputs["x"])
            return y, h, c

        return Impl(
            call,
            None,
            note="torch.ao.quantization.quantize_dynamic(dtype=torch.qint8), fbgemm",
            tolerance=QUANTIZED_TOLERANCE["qint8"],
        )

    return Provider("torch.ao.dynamic(qint8)", build)


class InferenceONNXWorkload(LSTMWorkload):
    family = "inference_onnx"
    baseline = "nn.LSTM"

    def providers(self, case, device, options: Options) -> List[Provider]:
        out = [
            p
            for p in super().providers(case, device, options)
            if p.name == "nn.LSTM" or p.name.startswith("lstm_fused:")
        ]
        I, H, L, bidirectional = self._sizes(case)
        if bidirectional:
            raise ValueError("inference_onnx: one direction only (D=1)")

        def ort_nn(case, state, dtype, device):
            if device.type != "cpu" or dtype != torch.float32:
                raise Unsupported("onnxruntime (CPU build) here: float32 on the CPU only")
            module = load_module(nn.LSTM(I, H, L), state, dtype, device)
            return _ort_impl(module, case, "nn.LSTM exported by torch.onnx.export")

        def ort_fused(case, state, dtype, device):
            import lstm_fused

            if device.type != "cpu" or dtype != torch.float32:
                raise Unsupported("onnxruntime (CPU build) here: float32 on the CPU only")
            module = load_module(lstm_fused.LSTM(I, H, L), state, dtype, device)
            try:
                return _ort_impl(module, case, "lstm_fused.LSTM exported by torch.onnx.export")
            except Absent:
                raise
            except Exception as exc:  # this build's lstm_fused has no ONNX export yet
                raise Absent(
                    f"torch.onnx.export of lstm_fused.LSTM failed: "
                    f"{type(exc).__name__}: {str(exc)[:200]}"
                ) from exc

        out.append(Provider("onnxruntime(nn.LSTM)", ort_nn))
        out.append(Provider("onnxruntime(lstm_fused)", ort_fused))
        for weights in (torch.float32, torch.bfloat16, torch.qint8):
            out.append(_frozen_provider(weights, (I, H, L)))
        out.append(_torch_dynamic_provider((I, H, L)))
        return out
