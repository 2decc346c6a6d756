"""Per-call overhead: one time step, small batches, where the fixed cost of a call (argument
checks, picking the backend, the operator's dispatch and autograd, allocations) is most of
its time. The streaming and recurrent-agent case: the state is carried from call to call.

A shape with T (T=1): nn.LSTM(I, H) against lstm_fused.LSTM(I, H), called as
`module(x (T, B, I), (h (1, B, H), c (1, B, H)))`. A shape without T: nn.LSTMCell(I, H)
against lstm_fused.LSTMCell(I, H), `cell(x (B, I), (h (B, H), c (B, H)))`. The baseline,
"torch.nn", is nn.LSTM or nn.LSTMCell. fwd+bwd differentiates x, h, c and every parameter.
Best timed call by call in turn (`python -m bench --interleaved overhead`): per call these are
tens of microseconds, which a busy neighbour on a shared machine moves a lot.
"""

from __future__ import annotations

from typing import List

import torch
from torch import nn

from ..cases import Case
from .base import (
    Impl,
    Options,
    Provider,
    Workload,
    backend_providers,
    itemsize,
    load_module,
    lstm_fused_backends,
    module_state,
)


class OverheadWorkload(Workload):
    family = "overhead"
    baseline = "torch.nn"
    diff_inputs = ("x", "h", "c")

    @staticmethod
    def _is_cell(case: Case) -> bool:
        return "T" not in case.dims

    def _module(self, case: Case, lstm_cls, cell_cls, **kwargs) -> nn.Module:
        d = case.dims
        if self._is_cell(case):
            return cell_cls(d["I"], d["H"], **kwargs)
        return lstm_cls(d["I"], d["H"], **kwargs)

    def make_state(self, case, gen):
        return module_state(
            gen, lambda: self._module(case, nn.LSTM, nn.LSTMCell, dtype=torch.float64)
        )

    def make_inputs(self, case, gen):
        d = case.dims
        B, I, H = d["B"], d["I"], d["H"]
        lead = () if self._is_cell(case) else (1,)  # LSTM: states (L*D = 1, B, H)
        x_shape = (B, I) if self._is_cell(case) else (d["T"], B, I)
        return {
            "x": torch.randn(*x_shape, generator=gen, dtype=torch.float64),
            "h": torch.randn(*lead, B, H, generator=gen, dtype=torch.float64) * 0.5,
            "c": torch.randn(*lead, B, H, generator=gen, dtype=torch.float64) * 0.5,
        }

    def _wrap(self, case, module) -> Impl:
        if self._is_cell(case):
            return Impl(
                lambda inputs: tuple(module(inputs["x"], (inputs["h"], inputs["c"]))), module
            )

        def call(inputs):
            out, (h, c) = module(inputs["x"], (inputs["h"], inputs["c"]))
            return out, h, c

        return Impl(call, module)

    def _fused(self, case, state, dtype, device, backend):
        import lstm_fused

        module = self._module(case, lstm_fused.LSTM, lstm_fused.LSTMCell, backend=backend)
        return self._wrap(case, load_module(module, state, dtype, device))

    def reference(self, case, state, device):
        return self._fused(case, state, torch.float64, device, "reference")

    def providers(self, case, device, options: Options) -> List[Provider]:
        def torch_nn(case, state, dtype, device):
            impl = self._wrap(
                case, load_module(self._module(case, nn.LSTM, nn.LSTMCell), state, dtype, device)
            )
            impl.note = "nn.LSTMCell" if self._is_cell(case) else "nn.LSTM"
            return impl

        return [Provider(self.baseline, torch_nn)] + backend_providers(
            lstm_fused_backends(device), self._fused
        )

    def flops(self, case):
        d = case.dims
        steps = d.get("T", 1)
        return steps * (2 * d["B"] * (d["I"] + d["H"]) * 4 * d["H"] + 10 * d["B"] * d["H"])

    def bytes_moved(self, case):
        d = case.dims
        B, I, H, steps = d["B"], d["I"], d["H"], d.get("T", 1)
        n = steps * B * I + 2 * B * H + 4 * H * (I + H) + 8 * H + (steps + 1) * B * H
        return n * itemsize(case.dtype)
