"""lstm_fused.LSTM and lstm_fused.LSTMCell: drop-in replacements of nn.LSTM / nn.LSTMCell.

Same constructor arguments, parameter names, shapes, initialisation and state_dict as
torch.nn; forward takes and returns exactly what nn.LSTM / nn.LSTMCell do (PackedSequence,
unbatched input and batch_first included). Extra keyword-only arguments: peephole (SPEC §1;
weights weight_c{i,f,o}_l{k}[_reverse], initialised to zero) and backend (SPEC §3).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import backends
from ._checks import check_device, check_dtype, check_shape, check_tensor
from .functional import lstm_layer


def _check_sizes(where, input_size, hidden_size, proj_size=0, num_layers=1, dropout=0.0):
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                        ("proj_size", proj_size), ("num_layers", num_layers)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")
    if hidden_size <= 0:
        raise ValueError(f"{where}: hidden_size must be greater than zero, got {hidden_size}")
    if input_size < 0:
        raise ValueError(f"{where}: input_size must be non-negative, got {input_size}")
    if num_layers <= 0:
        raise ValueError(f"{where}: num_layers must be greater than zero, got {num_layers}")
    if proj_size < 0:
        raise ValueError(f"{where}: proj_size must be non-negative, got {proj_size}")
    if proj_size >= hidden_size:
        raise ValueError(f"{where}: proj_size must be smaller than hidden_size "
                         f"({hidden_size}), got {proj_size}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"{where}: dropout must be a number in [0, 1], got {dropout!r}")


class LSTM(nn.Module):
    """nn.LSTM with fused kernels. See torch.nn.LSTM for the arguments and shapes.

    Input (T, B, I) (or (B, T, I) with batch_first, or (T, I) unbatched, or a PackedSequence);
    hx = (h_0 (L*D, B, R), c_0 (L*D, B, H)) with R = proj_size or hidden_size.
    Returns output (T, B, D*R) and (h_n, c_n) of the shapes of hx.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None, *, peephole: bool = False,
                 backend: str = "auto"):
        super().__init__()
        _check_sizes("LSTM", input_size, hidden_size, proj_size, num_layers, dropout)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.peephole = peephole
        self.backend = backends.check_name(backend)
        self.mode = "LSTM"
        factory = {"device": device, "dtype": dtype}
        H, G = hidden_size, 4 * hidden_size
        R = proj_size if proj_size > 0 else hidden_size
        D = 2 if bidirectional else 1
        # Registered in nn.LSTM's order, so the same seed gives the same initial values.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else R * D
            for suffix in ("", "_reverse")[:D]:
                self.register_parameter(f"weight_ih_l{layer}{suffix}",
                                        nn.Parameter(torch.empty((G, layer_input), **factory)))
                self.register_parameter(f"weight_hh_l{layer}{suffix}",
                                        nn.Parameter(torch.empty((G, R), **factory)))
                if bias:
                    self.register_parameter(f"bias_ih_l{layer}{suffix}",
                                            nn.Parameter(torch.empty(G, **factory)))
                    self.register_parameter(f"bias_hh_l{layer}{suffix}",
                                            nn.Parameter(torch.empty(G, **factory)))
                if proj_size > 0:
                    self.register_parameter(f"weight_hr_l{layer}{suffix}",
                                            nn.Parameter(torch.empty((proj_size, H), **factory)))
        if peephole:
            for layer in range(num_layers):
                for suffix in ("", "_reverse")[:D]:
                    for gate in ("ci", "cf", "co"):
                        self.register_parameter(f"weight_{gate}_l{layer}{suffix}",
                                                nn.Parameter(torch.empty(H, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation, U(-1/sqrt(H), 1/sqrt(H)); peephole weights zero."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, weight in self.named_parameters():
                if name.startswith(("weight_ci", "weight_cf", "weight_co")):
                    weight.zero_()
                else:
                    weight.uniform_(-stdv, stdv)

    def flatten_parameters(self) -> None:
        """Kept for nn.LSTM compatibility; the fused kernels need no flat weight buffer."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        names += ["weight_hr"] if self.proj_size > 0 else []
        return [[getattr(self, f"{n}_l{layer}{sfx}") for n in names]
                for layer in range(self.num_layers) for sfx in ("", "_reverse")[:self.num_directions]]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.peephole:
            s += ", peephole=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _layer_weights(self, layer: int):
        """Weights of one layer, directions stacked on a leading axis D (csrc/lstm_layer_args.h)."""
        sfx = ("", "_reverse")[:self.num_directions]

        def stacked(name):
            ws = [getattr(self, f"{name}_l{layer}{s}") for s in sfx]
            return ws[0].unsqueeze(0) if len(ws) == 1 else torch.stack(ws)

        bias = None
        if self.bias:
            # Summed per direction, then stacked: the sum of the stacked biases gave
            # bias_ih.grad and bias_hh.grad as two views of one buffer (autograd keeps each
            # view it is handed), so gradients accumulated over two backward calls were
            # counted twice and clip_grad_norm_ scaled them twice.
            ws = [getattr(self, f"bias_ih_l{layer}{s}") + getattr(self, f"bias_hh_l{layer}{s}")
                  for s in sfx]
            bias = ws[0].unsqueeze(0) if len(ws) == 1 else torch.stack(ws)
        w_hr = stacked("weight_hr") if self.proj_size > 0 else None
        w_peep = None
        if self.peephole:
            w_peep = torch.stack([stacked("weight_ci"), stacked("weight_cf"), stacked("weight_co")],
                                 dim=1)
        return stacked("weight_ih"), stacked("weight_hh"), bias, w_hr, w_peep

    def forward(self, input, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        where = "LSTM"
        weight = self.weight_ih_l0
        lengths = None
        packed = isinstance(input, PackedSequence)
        if packed:
            x, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
            lengths = lengths.to(x.device)
            batched = True
        else:
            check_tensor(input, "input", where=where)
            if input.dim() not in (2, 3):
                raise ValueError(f"{where}: input must be 2-D (T, I) unbatched or 3-D "
                                 f"({'B, T' if self.batch_first else 'T, B'}, I), "
                                 f"got {input.dim()}-D with shape {tuple(input.shape)}")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        if x.shape[-1] != self.input_size:
            raise ValueError(f"{where}: input has {x.shape[-1]} features in its last dimension, "
                             f"expected input_size={self.input_size}")
        check_device(x, "input", weight.device, where=where)
        check_dtype(x, "input", weight.dtype, where=where)

        T, B = x.shape[0], x.shape[1]
        D, L, H = self.num_directions, self.num_layers, self.hidden_size
        R = self.proj_size if self.proj_size > 0 else H
        h0, c0 = self._initial_state(hx, batched, B, D * L, R, H, x)

        h_n, c_n = [], []
        layer_input = x
        for layer in range(L):
            w_ih, w_hh, bias, w_hr, w_peep = self._layer_weights(layer)
            y, h, c = lstm_layer(layer_input, h0[layer * D:(layer + 1) * D],
                                 c0[layer * D:(layer + 1) * D], w_ih, w_hh, bias, w_hr, w_peep,
                                 lengths, backend=self.backend)
            if self.dropout > 0 and self.training and layer < L - 1:
                y = F.dropout(y, p=self.dropout, training=True)
            h_n.append(h)
            c_n.append(c)
            layer_input = y
        h_n = torch.cat(h_n, 0) if L > 1 else h_n[0]
        c_n = torch.cat(c_n, 0) if L > 1 else c_n[0]

        if packed:
            out = _repack(layer_input, lengths, input)
        elif not batched:
            out, h_n, c_n = layer_input.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        else:
            out = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return out, (h_n, c_n)

    def _initial_state(self, hx, batched, B, LD, R, H, x):
        where = "LSTM"
        if hx is None:
            return x.new_zeros((LD, B, R)), x.new_zeros((LD, B, H))
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{where}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        h0, c0 = hx
        for name, t, size in (("h_0", h0, R), ("c_0", c0, H)):
            check_tensor(t, name, where=where)
            expected = (LD, B, size) if batched else (LD, size)
            check_shape(t, name, expected, where=where)
            check_device(t, name, x.device, where=where)
            check_dtype(t, name, x.dtype, where=where)
        if not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        return h0, c0


def _repack(y: torch.Tensor, lengths: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """y (T, B, F) in the original batch order -> a PackedSequence laid out exactly like `like`."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices)
        lengths = lengths.index_select(0, like.sorted_indices.to(lengths.device))
    data = pack_padded_sequence(y, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class LSTMCell(nn.Module):
    """nn.LSTMCell with fused kernels. input (B, I) or (I,); hx = (h (B, H), c (B, H)) or
    unbatched (H,); returns (h', c') of the same shapes."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None, *, peephole: bool = False, backend: str = "auto"):
        super().__init__()
        _check_sizes("LSTMCell", input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.peephole = peephole
        self.backend = backends.check_name(backend)
        factory = {"device": device, "dtype": dtype}
        G = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty((G, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((G, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G, **factory))
            self.bias_hh = nn.Parameter(torch.empty(G, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        if peephole:
            for gate in ("ci", "cf", "co"):
                self.register_parameter(f"weight_{gate}",
                                        nn.Parameter(torch.empty(hidden_size, **factory)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTMCell's initialisation, U(-1/sqrt(H), 1/sqrt(H)); peephole weights zero."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for name, weight in self.named_parameters():
                if name in ("weight_ci", "weight_cf", "weight_co"):
                    weight.zero_()
                else:
                    weight.uniform_(-stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.peephole:
            s += ", peephole=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def forward(self, input, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        where = "LSTMCell"
        check_tensor(input, "input", where=where)
        if input.dim() not in (1, 2):
            raise ValueError(f"{where}: input must be 1-D (I,) or 2-D (B, I), got "
                             f"{input.dim()}-D with shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{where}: input has {input.shape[-1]} features in its last "
                             f"dimension, expected input_size={self.input_size}")
        check_device(input, "input", self.weight_ih.device, where=where)
        check_dtype(input, "input", self.weight_ih.dtype, where=where)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h, c = x.new_zeros((B, H)), x.new_zeros((B, H))
        else:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{where}: hx must be a tuple (h, c), got {type(hx).__name__}")
            h, c = hx
            for name, t in (("h", h), ("c", c)):
                check_tensor(t, name, where=where)
                check_shape(t, name, (B, H) if batched else (H,), where=where)
                check_device(t, name, x.device, where=where)
                check_dtype(t, name, x.dtype, where=where)
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        bias = (self.bias_ih + self.bias_hh).unsqueeze(0) if self.bias else None
        w_peep = None
        if self.peephole:
            w_peep = torch.stack([self.weight_ci, self.weight_cf, self.weight_co]).unsqueeze(0)
        # One step of a one-direction layer: x (1, B, I), states (1, B, H).
        _y, h_n, c_n = lstm_layer(x.unsqueeze(0), h.unsqueeze(0), c.unsqueeze(0),
                                  self.weight_ih.unsqueeze(0), self.weight_hh.unsqueeze(0), bias,
                                  None, w_peep, None, backend=self.backend)
        h_n, c_n = h_n[0], c_n[0]
        if not batched:
            h_n, c_n = h_n[0], c_n[0]
        return h_n, c_n
