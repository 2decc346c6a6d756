"""LSTM and LSTMCell workloads: nn.LSTM / nn.LSTMCell (oneDNN on the CPU, cuDNN on the GPU),
every lstm_fused backend, torch.compile of the reference, FlashRNN.

Inputs are time-major (T, B, I) as nn.LSTM's default; states start at zero.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from ..cases import Case
from .base import (
    Absent,
    Impl,
    Options,
    Provider,
    Unsupported,
    Workload,
    backend_providers,
    itemsize,
    load_module,
    lstm_fused_backends,
    module_state,
)


def _torch_rnn_note(device: torch.device, dtype: torch.dtype) -> str:
    if device.type == "cuda":
        return "cuDNN" if torch.backends.cudnn.is_available() else "native"
    if torch.backends.mkldnn.is_available() and dtype in (torch.float32, torch.bfloat16):
        return "oneDNN"
    return "native ATen"


class LSTMWorkload(Workload):
    family = "lstm"
    baseline = "nn.LSTM"
    diff_inputs = ("x",)

    @staticmethod
    def _sizes(case: Case):
        d = case.dims
        return d["I"], d["H"], d["L"], d["D"] == 2

    def make_state(self, case, gen):
        I, H, L, bidir = self._sizes(case)
        return module_state(gen, lambda: nn.LSTM(I, H, L, bidirectional=bidir, dtype=torch.float64))

    def make_inputs(self, case, gen):
        d = case.dims
        return {"x": torch.randn(d["T"], d["B"], d["I"], generator=gen, dtype=torch.float64)}

    @staticmethod
    def _wrap(module):
        def call(inputs):
            out, (h, c) = module(inputs["x"])
            return out, h, c

        return Impl(call, module)

    def _fused(self, case, state, dtype, device, backend):
        import lstm_fused

        I, H, L, bidir = self._sizes(case)
        return self._wrap(
            load_module(
                lstm_fused.LSTM(I, H, L, bidirectional=bidir, backend=backend), state, dtype, device
            )
        )

    def reference(self, case, state, device):
        return self._fused(case, state, torch.float64, device, "reference")

    def providers(self, case, device, options: Options) -> List[Provider]:
        I, H, L, bidir = self._sizes(case)

        def nn_lstm(case, state, dtype, device):
            impl = self._wrap(
                load_module(nn.LSTM(I, H, L, bidirectional=bidir), state, dtype, device)
            )
            impl.note = _torch_rnn_note(device, dtype)
            return impl

        backends = lstm_fused_backends(device)
        out = [Provider("nn.LSTM", nn_lstm)] + backend_providers(backends, self._fused)
        if "cuda" in backends:
            out.append(Provider("lstm_fused:cuda[gates]", self._gate_path))
        if options.compile:
            out.append(Provider("torch.compile(reference)", self._compiled_reference, late=True))
        out.append(Provider("flashrnn", self._flashrnn, late=True))
        return out

    def _gate_path(self, case, state, dtype, device):
        """Backend "cuda" held on its gate-kernel path (the switch cuda_path="gates", every
        call and its backward under it): the comparison point of the tensor-core time loop,
        which is the automatic choice for bfloat16/float16 where it fits
        (docs/gpu_performance.md)."""
        from lstm_fused import switches

        impl = self._fused(case, state, dtype, device, "cuda")
        impl.context = lambda: switches.override(cuda_path="gates")
        impl.note = 'switch cuda_path="gates"'
        return impl

    def _compiled_reference(self, case, state, dtype, device):
        """torch.compile of lstm_fused.reference.lstm_cell (the gate math of one step, fused by
        Inductor), driven by a Python time loop: compiling the whole unrolled loop would take
        minutes per shape."""
        from lstm_fused import reference

        I, H, L, bidir = self._sizes(case)
        module = load_module(nn.LSTM(I, H, L, bidirectional=bidir), state, dtype, device)
        cell = torch.compile(reference.lstm_cell, dynamic=False)

        def call(inputs):
            return _stepwise_lstm(module, inputs["x"], cell)

        return Impl(
            call,
            module,
            note="compiled lstm_cell, Python time loop; compile time "
            "not counted (first call is the check)",
        )

    def _flashrnn(self, case, state, dtype, device):
        try:
            import flashrnn  # noqa: F401
        except ImportError as exc:
            raise Absent(
                f"flashrnn is not importable ({exc}); pip install flashrnn==1.0.8, "
                f"or on the device machine carry its wheel (tools/fetch_gpu_wheels.sh)"
            ) from exc
        if device.type != "cuda":
            raise Unsupported("FlashRNN runs on CUDA only")
        I, H, L, bidir = self._sizes(case)
        if bidir:
            raise Unsupported("FlashRNN has no bidirectional layer")
        if dtype not in _FLASHRNN_DTYPES:
            raise Unsupported(
                f"FlashRNN's kernels take {sorted(_FLASHRNN_DTYPES.values())}, not {dtype}"
            )
        module = load_module(nn.LSTM(I, H, L), state, dtype, device)
        return Impl(
            lambda inputs: _flashrnn_forward(module, inputs["x"]),
            module,
            note="flashrnn.flashrnn(function='lstm', backend='cuda_fused'); input "
            "projection by F.linear; weight re-layout counted in the time; its "
            "kernel is compiled (and tuned) at the first call, not timed",
        )

    def flops(self, case):
        d = case.dims
        T, B, I, H, L, D = d["T"], d["B"], d["I"], d["H"], d["L"], d["D"]
        G, total = 4 * H, 0.0
        for layer in range(L):
            layer_in = I if layer == 0 else D * H
            total += D * (2 * T * B * layer_in * G + 2 * T * B * H * G + 10 * T * B * H)
        return total

    def bytes_moved(self, case):
        d = case.dims
        T, B, I, H, L, D = d["T"], d["B"], d["I"], d["H"], d["L"], d["D"]
        G, n = 4 * H, T * B * I
        for layer in range(L):
            layer_in = I if layer == 0 else D * H
            n += D * (G * layer_in + G * H + 2 * G) + T * B * D * H + 2 * D * B * H
        return n * itemsize(case.dtype)

    def saved_bytes(self, case):
        """Gate activations a fused forward saves for backward: (L, D, T, B, 4H)."""
        d = case.dims
        return d["L"] * d["D"] * d["T"] * d["B"] * 4 * d["H"] * itemsize(case.dtype)


def _stepwise_lstm(module: nn.LSTM, x: torch.Tensor, cell):
    """nn.LSTM's forward (zero initial state) one step at a time through `cell`, which has the
    signature of lstm_fused.reference.lstm_cell. x (T, B, I) -> (y (T, B, D*H), h_n, c_n)."""
    T, B, _ = x.shape
    H, D = module.hidden_size, 2 if module.bidirectional else 1
    h_n, c_n, layer_in = [], [], x
    for layer in range(module.num_layers):
        outs = []
        for d, sfx in enumerate(("", "_reverse")[:D]):
            w_ih = getattr(module, f"weight_ih_l{layer}{sfx}")
            w_hh = getattr(module, f"weight_hh_l{layer}{sfx}")
            bias = getattr(module, f"bias_ih_l{layer}{sfx}") + getattr(
                module, f"bias_hh_l{layer}{sfx}"
            )
            h = c = x.new_zeros(B, H)
            ys = [None] * T
            for t in range(T - 1, -1, -1) if d == 1 else range(T):
                h, c = cell(layer_in[t], h, c, w_ih, w_hh, bias)
                ys[t] = h
            outs.append(torch.stack(ys))
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, dim=2) if D == 2 else outs[0]
    return layer_in, torch.stack(h_n), torch.stack(c_n)


_FLASHRNN_DTYPES = {torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float32: "float32"}


def _flashrnn_forward(module: nn.LSTM, x: torch.Tensor, backend: str = "cuda_fused"):
    """nn.LSTM's math through flashrnn.flashrnn, layer by layer (one direction, one head).

    flashrnn 1.0.8's layouts (flashrnn/flashrnn/flashrnn.py, FlashRNNConfig defaults):
    Wx "BTGHD" (B, T, 4, 1, H), the input pre-activations; R "GHDP" (4, 1, H, H) with
    gate_g[d] = sum_p R[g, 0, d, p] h[p], which is nn.LSTM's weight_hh (4H, H) reshaped, no
    transpose; b "GHD" (4, 1, H); states "SBTHD" (S=2: h, c) with T=1 for the initial state;
    it returns (states (2, B, T, 1, H), last (2, B, 1, 1, H)). Gate order i, f, z(=g), o, as
    PyTorch's. `dtype` is the kernel's dtype (it defaults to bfloat16), so it is passed.
    backend "vanilla" (plain PyTorch, any device and dtype) checks these layouts on the CPU.
    """
    from flashrnn import flashrnn

    T, B, _ = x.shape
    H = module.hidden_size
    kernel_dtype = _FLASHRNN_DTYPES.get(x.dtype, "float64")
    h_n, c_n, layer_in = [], [], x
    for layer in range(module.num_layers):
        w_ih = getattr(module, f"weight_ih_l{layer}")
        w_hh = getattr(module, f"weight_hh_l{layer}")
        b_ih = getattr(module, f"bias_ih_l{layer}")
        b_hh = getattr(module, f"bias_hh_l{layer}")
        wx = F.linear(layer_in.transpose(0, 1), w_ih, b_ih).reshape(B, T, 4, 1, H)
        R = w_hh.reshape(4, 1, H, H)
        b = b_hh.reshape(4, 1, H)
        states0 = x.new_zeros(2, B, 1, 1, H)
        states, last = flashrnn(
            wx, R, b, states=states0, function="lstm", backend=backend, dtype=kernel_dtype
        )
        y = states[0].reshape(B, T, H).transpose(0, 1)
        h_n.append(last[0].reshape(B, H))
        c_n.append(last[1].reshape(B, H))
        layer_in = y
    return layer_in, torch.stack(h_n), torch.stack(c_n)


class LSTMCellWorkload(Workload):
    family = "lstm_cell"
    baseline = "nn.LSTMCell"
    diff_inputs = ("x", "h", "c")

    def make_state(self, case, gen):
        d = case.dims
        return module_state(gen, lambda: nn.LSTMCell(d["I"], d["H"], dtype=torch.float64))

    def make_inputs(self, case, gen):
        d = case.dims
        B, I, H = d["B"], d["I"], d["H"]
        return {
            "x": torch.randn(B, I, generator=gen, dtype=torch.float64),
            "h": torch.randn(B, H, generator=gen, dtype=torch.float64) * 0.5,
            "c": torch.randn(B, H, generator=gen, dtype=torch.float64) * 0.5,
        }

    @staticmethod
    def _wrap(module):
        return Impl(lambda inputs: tuple(module(inputs["x"], (inputs["h"], inputs["c"]))), module)

    def _fused(self, case, state, dtype, device, backend):
        import lstm_fused

        d = case.dims
        return self._wrap(
            load_module(lstm_fused.LSTMCell(d["I"], d["H"], backend=backend), state, dtype, device)
        )

    def reference(self, case, state, device):
        return self._fused(case, state, torch.float64, device, "reference")

    def providers(self, case, device, options):
        d = case.dims

        def nn_cell(case, state, dtype, device):
            return self._wrap(load_module(nn.LSTMCell(d["I"], d["H"]), state, dtype, device))

        return [Provider("nn.LSTMCell", nn_cell)] + backend_providers(
            lstm_fused_backends(device), self._fused
        )

    def flops(self, case):
        d = case.dims
        return 2 * d["B"] * (d["I"] + d["H"]) * 4 * d["H"] + 10 * d["B"] * d["H"]

    def bytes_moved(self, case):
        d = case.dims
        B, I, H = d["B"], d["I"], d["H"]
        n = B * I + 2 * B * H + 4 * H * (I + H) + 8 * H + 2 * B * H
        return n * itemsize(case.dtype)
