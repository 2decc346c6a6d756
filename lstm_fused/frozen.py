"""Frozen inference: LSTMs whose weights are packed once, for deployment on the CPU.

    model = lstm_fused.freeze_for_inference(model, weights=torch.bfloat16)  # a frozen copy
    with torch.no_grad():
        y = model(x)

freeze_for_inference returns a copy of `model` in which every nn.LSTM and lstm_fused.LSTM is a
FrozenLSTM: the same function, inference only, with its weights stored as `weights` says and
packed once in the layout the CPU kernel reads (csrc/lstm_frozen_args.h), so no call repacks
them:
  torch.float32   the float32 weights as they are (same math as lstm_fused.LSTM, float32
                  rounding)
  torch.bfloat16  weights rounded to bfloat16, the activations x_t, h_{t-1} rounded to
                  bfloat16 where they enter the products (AVX512_BF16's vdpbf16ps), everything
                  else (products' sums, gates, c, h, y) float32: half the weight memory
  torch.qint8     weights stored as int8 per output row (symmetric, scale max|w| / 127), the
                  activations quantized per row and step as the call runs (dynamic, symmetric,
                  scale max|a| / 127), int32 sums (AVX512_VNNI's vpdpbusd), the rest float32:
                  a quarter of the weight memory
The errors of each against float32 are in docs/contract.md ("Frozen inference"). The math is
lstm_fused/reference_frozen.py's.
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import nn

from . import functional, reference_frozen
from .ops import registry
from .ops.library import one_thread_if_busy

WEIGHTS = (torch.float32, torch.bfloat16, torch.qint8)
U = reference_frozen.U
# float32 weights with more batch rows than this run lstm_fused.LSTM's CPU time loop instead
# (one GEMM for the input projections is faster there; 2-core AMD EPYC, 1 thread, H=256, T=100:
# B=8 frozen 8.4 ms vs 8.7, B=32 32.4 ms vs 30.1).
FLOAT32_FROZEN_MAX_B = 8


def _check_weights(weights) -> torch.dtype:
    if weights not in WEIGHTS:
        raise TypeError(
            "freeze_for_inference: weights must be torch.float32, torch.bfloat16 or "
            f"torch.qint8, got {weights!r}"
        )
    return weights


def _pad_units(t: torch.Tensor, H: int, value=0) -> torch.Tensor:
    """(4H, ...) -> (4, P * U, ...) with rows past H set to `value`."""
    P = (H + U - 1) // U
    out = t.new_full((4, P * U) + tuple(t.shape[1:]), value)
    out[:, :H] = t.reshape((4, H) + tuple(t.shape[1:]))
    return out


def pack_rows(v: torch.Tensor, H: int) -> torch.Tensor:
    """(4H,) float -> (P, 4, U) float32, zero past H (bias, scales)."""
    return _pad_units(v.detach().float(), H).reshape(4, -1, U).permute(1, 0, 2).contiguous()


def pack(
    w: torch.Tensor, H: int, scale: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A stored weight (4H, K) -> (packed (P, K_q, 4, U, q), scale (P, 4, U) or None): float32
    and bfloat16 as they are; int8 (with its row scales (4H,)) as uint8 = value + 128."""
    packed_scale = None
    if w.dtype == torch.int8:
        vals = (w.to(torch.int16) + 128).to(torch.uint8)
        packed_scale = pack_rows(scale, H)
        pad = 128
    else:
        vals, pad = w.detach(), 0
    q = reference_frozen.GROUP[vals.dtype]
    K = vals.shape[1]
    Kq = (K + q - 1) // q
    padded = _pad_units(vals, H, pad)  # (4, P U, K)
    full = padded.new_full((4, padded.shape[1], Kq * q), pad)
    full[:, :, :K] = padded
    P = padded.shape[1] // U
    packed = full.reshape(4, P, U, Kq, q).permute(1, 3, 0, 2, 4).contiguous()
    return packed, packed_scale


def quantize_weight(w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A float weight (4H, K) -> (int8 values (4H, K), float32 scales (4H,)): per output row,
    symmetric, scale max|w| / 127 (a zero row gets scale 1), values round(w / scale)."""
    w = w.detach().float()
    amax = w.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


class FrozenLSTM(nn.Module):
    """An LSTM in inference only, its weights stored as `weights` (float32, bfloat16, qint8)
    and packed once. Made by freeze_for_inference (or FrozenLSTM.from_lstm) from an nn.LSTM or
    lstm_fused.LSTM without proj_size or peepholes.

    forward(input, hx=None) -> (output, (h_n, c_n)) takes and returns what nn.LSTM's does for
    padded input: (T, B, I), (B, T, I) with batch_first, or (T, I) unbatched; hx = (h_0, c_0)
    each (L * D, B, H). No PackedSequence, no lengths, no gradients (it raises). Runs on the
    CPU's C++ kernel (csrc/cpu/lstm_frozen_cpu.cpp); tensors elsewhere run the plain-PyTorch
    math (reference_frozen.py).

    state_dict: nn.LSTM's names (weight_ih_l{k}[_reverse], weight_hh_..., bias_ih_...,
    bias_hh_...), the weights in the stored dtype (float32, bfloat16, or int8 with their
    float32 row scales as weight_..._scale (4H,)); the packed copies are not in it."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        bidirectional: bool = False,
        *,
        weights: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.weights = _check_weights(weights)
        D = 2 if bidirectional else 1
        for k in range(num_layers):
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                I = input_size if k == 0 else D * hidden_size
                self.set_weight(f"weight_ih{sfx}", torch.zeros(4 * hidden_size, I))
                self.set_weight(f"weight_hh{sfx}", torch.zeros(4 * hidden_size, hidden_size))
                if bias:
                    self.register_buffer(f"bias_ih{sfx}", torch.zeros(4 * hidden_size))
                    self.register_buffer(f"bias_hh{sfx}", torch.zeros(4 * hidden_size))
        self._repack()

    def set_weight(self, name: str, w: torch.Tensor) -> None:
        """Stores the float weight w (4H, K) as buffer `name` in the module's weights dtype:
        float32, bfloat16 (nearest even), or int8 with its row scales in `name`_scale
        (quantize_weight). Call _repack() after."""
        if self.weights == torch.qint8:
            values, scale = quantize_weight(w)
            self.register_buffer(name, values)
            self.register_buffer(name + "_scale", scale)
        else:
            self.register_buffer(name, w.detach().to(self.weights).contiguous())

    @classmethod
    def from_lstm(cls, lstm: nn.Module, weights: torch.dtype = torch.float32) -> "FrozenLSTM":
        """A FrozenLSTM with the weights of `lstm` (an nn.LSTM or lstm_fused.LSTM)."""
        _check_weights(weights)
        if getattr(lstm, "proj_size", 0):
            raise ValueError("freeze_for_inference: proj_size > 0 is not supported by FrozenLSTM")
        if getattr(lstm, "peephole", False):
            raise ValueError("freeze_for_inference: peephole=True is not supported by FrozenLSTM")
        out = cls(
            lstm.input_size,
            lstm.hidden_size,
            lstm.num_layers,
            lstm.bias,
            lstm.batch_first,
            lstm.bidirectional,
            weights=weights,
        )
        for name, value in lstm.state_dict().items():
            if name.startswith("weight_"):
                out.set_weight(name, value.float())
            elif name.startswith("bias_"):
                out.register_buffer(name, value.detach().float().clone())
        out._repack()
        return out

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .cpu() / ...: the packed copies follow the buffers
        out = super()._apply(fn, *args, **kwargs)
        self._repack()
        return out

    def _repack(self) -> None:
        """The kernel's tensors of every layer and direction, from the stored weights; for
        float32 also the layer weights of functional.lstm (views of the buffers, stacked)."""
        H, D = self.hidden_size, 2 if self.bidirectional else 1
        self._packed = []
        self._layer_weights = []
        for k in range(self.num_layers):
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                w_ih, s_ih = pack(
                    getattr(self, f"weight_ih{sfx}"),
                    H,
                    getattr(self, f"weight_ih{sfx}_scale", None),
                )
                w_hh, s_hh = pack(
                    getattr(self, f"weight_hh{sfx}"),
                    H,
                    getattr(self, f"weight_hh{sfx}_scale", None),
                )
                b = torch.zeros(4 * H)
                if self.bias:
                    b = (
                        getattr(self, f"bias_ih{sfx}").float()
                        + getattr(self, f"bias_hh{sfx}").float()
                    )
                self._packed.append((w_ih, w_hh, pack_rows(b, H), s_ih, s_hh))
            if self.weights == torch.float32:
                names = [f"_l{k}" + ("_reverse" if d else "") for d in range(D)]
                stack = [
                    torch.stack([getattr(self, f"{w}{n}").float() for n in names])
                    for w in ("weight_ih", "weight_hh")
                ]
                bias = None
                if self.bias:
                    bias = torch.stack(
                        [getattr(self, f"bias_ih{n}") + getattr(self, f"bias_hh{n}") for n in names]
                    )
                self._layer_weights.append((stack[0], stack[1], bias, None, None))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors
    ):
        # Buffers are replaced (the dtypes must match), then packed.
        for name in list(self._buffers):
            key = prefix + name
            if key in state_dict:
                new = state_dict[key]
                old = self._buffers[name]
                if new.shape != old.shape or new.dtype != old.dtype:
                    errors.append(
                        f"size or dtype mismatch for {key}: copying {tuple(new.shape)} {new.dtype}, "
                        f"expected {tuple(old.shape)} {old.dtype}"
                    )
                    continue
                self._buffers[name] = new.detach().clone()
            elif strict:
                missing.append(key)
        if strict:
            own = {prefix + n for n in self._buffers}
            unexpected.extend(
                k
                for k in state_dict
                if k.startswith(prefix) and k not in own and "." not in k[len(prefix) :]
            )
        self._repack()

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", weights={self.weights}"

    @one_thread_if_busy
    def forward(self, input, hx=None):
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise NotImplementedError(
                "FrozenLSTM takes padded tensors, not a PackedSequence (run the lstm_fused.LSTM "
                "it was frozen from, or pad the batch)"
            )
        tensors = [input] + (list(hx) if hx is not None else [])
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            raise RuntimeError(
                "FrozenLSTM is inference only: its inputs require grad; call it under "
                "torch.no_grad() or torch.inference_mode(), or train the LSTM it was frozen from"
            )
        if input.dim() not in (2, 3):
            raise ValueError(
                f"FrozenLSTM: Expected input to be 2D or 3D, got {input.dim()}D instead"
            )
        if input.dtype != torch.float32:
            raise TypeError(f"FrozenLSTM: input must be float32, got {input.dtype}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"FrozenLSTM: input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {input.shape[-1]}"
            )
        unbatched = input.dim() == 2
        x = (
            input.unsqueeze(1)
            if unbatched
            else (input.transpose(0, 1) if self.batch_first else input)
        )
        D, H, L = (2 if self.bidirectional else 1), self.hidden_size, self.num_layers
        B = x.shape[1]
        if hx is None:
            h0 = x.new_zeros(L * D, B, H)
            c0 = h0
        else:
            h0, c0 = hx
            if unbatched:
                h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
            for name, t in (("h_0", h0), ("c_0", c0)):
                if t.shape != (L * D, B, H):
                    raise RuntimeError(
                        f"FrozenLSTM: Expected hidden size {(L * D, B, H)}, got {tuple(t.shape)} ({name})"
                    )
        if self.weights == torch.float32 and B > FLOAT32_FROZEN_MAX_B and x.device.type == "cpu":
            y, h_n, c_n = functional.lstm(x, h0, c0, self._layer_weights)
            return self._outputs(y, h_n, c_n, unbatched)
        impl = registry.resolve("auto", "lstm_frozen", x.device, x.dtype)
        run = impl.kernels.layer
        h_n, c_n = [], []
        y = x.contiguous()
        for k in range(L):
            outs = []
            for d in range(D):
                w_ih, w_hh, b, s_ih, s_hh = self._packed[k * D + d]
                xd = y if d == 0 else y.flip(0)
                yd, hd, cd = run(xd, h0[k * D + d], c0[k * D + d], w_ih, w_hh, b, s_ih, s_hh)
                outs.append(yd if d == 0 else yd.flip(0))
                h_n.append(hd)
                c_n.append(cd)
            y = outs[0] if D == 1 else torch.cat(outs, dim=2)
        return self._outputs(y, torch.stack(h_n), torch.stack(c_n), unbatched)

    def _outputs(self, y, h_n, c_n, unbatched):
        """(output, (h_n, c_n)) of time-major y in the layout of the input."""
        if unbatched:
            return y.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (y.transpose(0, 1) if self.batch_first else y), (h_n, c_n)


def freeze_for_inference(
    model: nn.Module, weights: torch.dtype = torch.float32, *, inplace: bool = False
) -> nn.Module:
    """`model` (a copy unless inplace) with every nn.LSTM and lstm_fused.LSTM inside (or model
    itself) replaced by a FrozenLSTM storing its weights as `weights` (torch.float32,
    torch.bfloat16, torch.qint8). The result is for inference: call it under torch.no_grad()."""
    from .lstm import LSTM

    _check_weights(weights)
    kinds = (nn.LSTM, LSTM)
    if isinstance(model, kinds):
        return FrozenLSTM.from_lstm(model, weights)
    if not inplace:
        model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                setattr(parent, name, FrozenLSTM.from_lstm(child, weights))
    return model.eval() if not inplace else model
