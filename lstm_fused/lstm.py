"""lstm_fused.LSTM and lstm_fused.LSTMCell: drop-in replacements of nn.LSTM / nn.LSTMCell.

Same constructor arguments, parameter names, shapes, initialisation and state_dict as
torch.nn; forward takes and returns exactly what nn.LSTM / nn.LSTMCell do (PackedSequence,
unbatched input and batch_first included). Extra keyword-only arguments: peephole
(docs/contract.md, section 1; weights weight_c{i,f,o}_l{k}[_reverse], initialised to zero) and
backend (section 4); LSTM.forward's resets (per-step state resets, docs/contract.md, "Resets").
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import functional
from .functional.lstm import check_resets
from ._checks import check_device, check_dtype, check_shape, check_tensor
from .ops.library import one_thread_if_busy
from .ops.registry import check_name


def _check_int(where, name, value):
    # bool is an int to Python, never a size to a user
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{where}: {name} must be an int, got {type(value).__name__}")


def _check_lstm_args(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size):
    """nn.LSTM's (nn.RNNBase's) constructor checks, in its order and with its exception types
    and warning; the messages also say what was given."""
    where = "LSTM"
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, numbers.Number)
        or not 0 <= dropout <= 1
    ):
        raise ValueError(
            f"{where}: dropout must be a number in [0, 1] (the probability of an "
            f"element being zeroed), got {dropout!r}"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            f"{where}: dropout is applied after every layer but the last, so a "
            f"non-zero dropout expects num_layers greater than 1, but got "
            f"dropout={dropout} and num_layers={num_layers}",
            stacklevel=3,
        )
    for name, value in (("bias", bias), ("batch_first", batch_first)):
        if not isinstance(value, bool):
            raise TypeError(
                f"{where}: {name} must be a bool, got {type(value).__name__} ({value!r})"
            )
    for name, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("proj_size", proj_size),
    ):
        _check_int(where, name, value)
        if name != "proj_size" and value <= 0:
            raise ValueError(f"{where}: {name} must be greater than zero, got {value}")
    if proj_size < 0:
        raise ValueError(
            f"{where}: proj_size must be a positive integer, or zero to disable "
            f"projections, got {proj_size}"
        )
    if proj_size >= hidden_size:
        raise ValueError(
            f"{where}: proj_size has to be smaller than hidden_size "
            f"({hidden_size}), got {proj_size}"
        )


def _check_cell_args(input_size, hidden_size):
    """nn.LSTMCell checks nothing; sizes that are not ints, and hidden_size=0 (which no kernel
    here computes), are refused. input_size=0 works, as in nn.LSTMCell."""
    where = "LSTMCell"
    _check_int(where, "input_size", input_size)
    _check_int(where, "hidden_size", hidden_size)
    if hidden_size <= 0:
        raise ValueError(f"{where}: hidden_size must be greater than zero, got {hidden_size}")
    if input_size < 0:
        raise ValueError(f"{where}: input_size must be non-negative, got {input_size}")


class LSTM(nn.Module):
    """nn.LSTM with fused kernels. See torch.nn.LSTM for the arguments and shapes.

    Input (T, B, I) (or (B, T, I) with batch_first, or (T, I) unbatched, or a PackedSequence);
    hx = (h_0 (L*D, B, R), c_0 (L*D, B, H)) with R = proj_size or hidden_size.
    Returns output (T, B, D*R) and (h_n, c_n) of the shapes of hx.
    forward's keyword-only resets: (T, B) ((B, T) with batch_first, (T,) unbatched; with a
    PackedSequence the padded layout in the original batch order, T the longest length), bool
    or 0/1: where set, that row starts that step from h_0, c_0 (zeros without hx) in every
    layer; no gradient crosses a reset (docs/contract.md, "Resets").

    Bad input raises the exception type nn.LSTM raises for it (ValueError for an input dtype
    other than the weights', RuntimeError for a wrong number of features or a hidden state that
    does not fit, TypeError for a non-bool bias / batch_first, ...), with a message that names
    the argument. nn.LSTM's attributes and methods are here with its semantics: _flat_weights
    (always in sync: read from the module at each access), _flat_weights_names, _all_weights,
    all_weights, flatten_parameters (a no-op), check_input, check_forward_args,
    check_hidden_size, get_expected_hidden_size, get_expected_cell_size, permute_hidden, mode.

    Not a subclass of nn.LSTM, so isinstance(m, nn.LSTM) is False, by choice: torch.compile's
    dynamo (torch 2.13, torch._dynamo.config.allow_rnn=False by default) refuses to trace any
    nn.RNN / nn.GRU / nn.LSTM instance, subclasses included: it graph-breaks around the module
    and torch.compile(fullgraph=True) raises "Attempted to wrap RNN, GRU, or LSTM", while this
    module compiles into one graph (tests/test_nn_lstm_api.py checks both). Code that asks
    isinstance(m, nn.LSTM) can ask isinstance(m, (nn.LSTM, lstm_fused.LSTM)).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        peephole: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        _check_lstm_args(input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.peephole = peephole
        self.backend = check_name(backend)
        self.mode = "LSTM"
        factory = {"device": device, "dtype": dtype}
        H, G = hidden_size, 4 * hidden_size
        R = proj_size if proj_size > 0 else hidden_size
        D = 2 if bidirectional else 1
        # Registered in nn.LSTM's order, so the same seed gives the same initial values.
        # _flat_weights_names / _all_weights: nn.LSTM's lists of those names (peepholes not in).
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else R * D
            for suffix in ("", "_reverse")[:D]:
                names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
                names = [
                    f"{n}_l{layer}{suffix}"
                    for n in names + (["weight_hr"] if proj_size > 0 else [])
                ]
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
                self.register_parameter(
                    f"weight_ih_l{layer}{suffix}",
                    nn.Parameter(torch.empty((G, layer_input), **factory)),
                )
                self.register_parameter(
                    f"weight_hh_l{layer}{suffix}", nn.Parameter(torch.empty((G, R), **factory))
                )
                if bias:
                    self.register_parameter(
                        f"bias_ih_l{layer}{suffix}", nn.Parameter(torch.empty(G, **factory))
                    )
                    self.register_parameter(
                        f"bias_hh_l{layer}{suffix}", nn.Parameter(torch.empty(G, **factory))
                    )
                if proj_size > 0:
                    self.register_parameter(
                        f"weight_hr_l{layer}{suffix}",
                        nn.Parameter(torch.empty((proj_size, H), **factory)),
                    )
        if peephole:
            for layer in range(num_layers):
                for suffix in ("", "_reverse")[:D]:
                    for gate in ("ci", "cf", "co"):
                        self.register_parameter(
                            f"weight_{gate}_l{layer}{suffix}",
                            nn.Parameter(torch.empty(H, **factory)),
                        )
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

    # nn.LSTM's (nn.RNNBase's) attributes and methods, with their semantics, for code and
    # libraries that reach for them.

    @property
    def _flat_weights(self) -> List[Optional[torch.Tensor]]:
        """The weights named by _flat_weights_names, read at each access, so they never go stale
        (replaced Parameters, load_state_dict, .to(), parametrizations, functional_call);
        None for a name the module no longer has, as nn.LSTM does."""
        return [getattr(self, n) if hasattr(self, n) else None for n in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, n) for n in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """Kept for nn.LSTM compatibility; the fused kernels need no flat weight buffer."""

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def check_input(self, input: torch.Tensor, batch_sizes: Optional[torch.Tensor]) -> None:
        """input (T, B, I) or (B, T, I), or the (N, I) data of a PackedSequence when batch_sizes
        is given. A dtype other than the weights' raises ValueError (not under autocast), a
        wrong number of dimensions or features RuntimeError, as in nn.LSTM."""
        weight = getattr(self, self._flat_weights_names[0])  # nn.LSTM's _flat_weights[0]
        if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(
                f"LSTM: input has dtype {input.dtype}, expected {weight.dtype} (the "
                f"dtype of the module's parameters): convert the input with "
                f"input.to({weight.dtype}), or the model with model.to({input.dtype})"
            )
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(
                f"LSTM: input must have {expected_dim} dimensions, got {input.dim()}"
            )
        if input.size(-1) != self.input_size:
            raise RuntimeError(
                f"LSTM: input has {input.size(-1)} features in its last "
                f"dimension, expected input_size={self.input_size}"
            )

    def _mini_batch(self, input, batch_sizes) -> int:
        if batch_sizes is not None:
            return int(batch_sizes[0])
        return input.size(0) if self.batch_first else input.size(1)

    def get_expected_hidden_size(
        self, input: torch.Tensor, batch_sizes: Optional[torch.Tensor]
    ) -> Tuple[int, int, int]:
        """(L*D, B, R) with R = proj_size or hidden_size."""
        R = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (self.num_layers * self.num_directions, self._mini_batch(input, batch_sizes), R)

    def get_expected_cell_size(
        self, input: torch.Tensor, batch_sizes: Optional[torch.Tensor]
    ) -> Tuple[int, int, int]:
        """(L*D, B, H)."""
        return (
            self.num_layers * self.num_directions,
            self._mini_batch(input, batch_sizes),
            self.hidden_size,
        )

    def check_hidden_size(
        self,
        hx: torch.Tensor,
        expected_hidden_size: Tuple[int, int, int],
        msg: str = "Expected hidden size {}, got {}",
    ) -> None:
        if hx.size() != expected_hidden_size:
            raise RuntimeError(msg.format(expected_hidden_size, list(hx.size())))

    def check_forward_args(
        self,
        input: torch.Tensor,
        hidden: Tuple[torch.Tensor, torch.Tensor],
        batch_sizes: Optional[torch.Tensor],
    ) -> None:
        self.check_input(input, batch_sizes)
        self.check_hidden_size(
            hidden[0],
            self.get_expected_hidden_size(input, batch_sizes),
            "Expected hidden[0] size {}, got {}",
        )
        self.check_hidden_size(
            hidden[1],
            self.get_expected_cell_size(input, batch_sizes),
            "Expected hidden[1] size {}, got {}",
        )

    def permute_hidden(
        self, hx: Tuple[torch.Tensor, torch.Tensor], permutation: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """hx with its batch dimension (1) reordered by permutation (None: hx itself)."""
        if permutation is None:
            return hx
        return hx[0].index_select(1, permutation), hx[1].index_select(1, permutation)

    def extra_repr(self) -> str:
        """nn.LSTM's, then peephole and backend where not their defaults."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.peephole:
            s += ", peephole=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def layer_weights(self, layer: int):
        """(w_ih (D, 4H, I), w_hh (D, 4H, R), bias (D, 4H) or None, w_hr (D, P, H) or None,
        w_peep (D, 3, H) or None) of layer `layer`: its weights with the directions stacked on a
        leading axis D, as lstm_fused.functional.lstm takes them."""
        sfx = ("", "_reverse")[: self.num_directions]

        def stacked(name):
            ws = [getattr(self, f"{name}_l{layer}{s}") for s in sfx]
            return ws[0].unsqueeze(0) if len(ws) == 1 else torch.stack(ws)

        bias = None
        if self.bias:
            # Sum per direction, then stack: autograd then gives bias_ih and bias_hh gradients
            # of their own. Summing the stacked tensors made their .grad two views of one
            # buffer, so an in-place op on one (clip_grad_norm_, a second backward adding into
            # .grad) changed the other too.
            sums = [
                getattr(self, f"bias_ih_l{layer}{s}") + getattr(self, f"bias_hh_l{layer}{s}")
                for s in sfx
            ]
            bias = sums[0].unsqueeze(0) if len(sums) == 1 else torch.stack(sums)
        w_hr = stacked("weight_hr") if self.proj_size > 0 else None
        w_peep = None
        if self.peephole:
            w_peep = torch.stack(
                [stacked("weight_ci"), stacked("weight_cf"), stacked("weight_co")], dim=1
            )
        return stacked("weight_ih"), stacked("weight_hh"), bias, w_hr, w_peep

    @one_thread_if_busy
    def forward(
        self,
        input,
        hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        *,
        resets: Optional[torch.Tensor] = None,
    ):
        where = "LSTM"
        weight = self.weight_ih_l0
        lengths = None
        packed = isinstance(input, PackedSequence)
        if packed:
            if input.data.is_cuda and torch.cuda.is_current_stream_capturing():
                # batch_sizes live on the host: the lengths would be copied to the device
                raise RuntimeError(
                    f"{where}: a PackedSequence input cannot be captured in a "
                    f"CUDA graph (its batch sizes are a host tensor); capture "
                    f"the padded input, or lstm_fused.functional.lstm with "
                    f"lengths on the device"
                )
            x, lengths = pad_packed_sequence(input)  # (T, B, I), original batch order
            lengths = lengths.to(x.device)
            batched = True
        else:
            check_tensor(input, "input", where=where)
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{where}: input must be 2-D (T, I) unbatched or 3-D "
                    f"({'B, T' if self.batch_first else 'T, B'}, I), "
                    f"got {input.dim()}-D with shape {tuple(input.shape)}"
                )
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)
            if batched and self.batch_first:
                x = x.transpose(0, 1)
        # nn.LSTM's exception types: a dtype other than the weights' ValueError, the wrong
        # number of features RuntimeError
        self.check_input(input.data if packed else x, input.batch_sizes if packed else None)
        check_device(x, "input", weight.device, where=where)

        h0, c0 = self.initial_state(hx, x, batched, nn_errors=True)
        if resets is not None:
            resets = self._time_major_resets(resets, x, batched, packed)
        between_layers = None
        if self.dropout > 0 and self.training:

            def between_layers(y):
                return _dropout_like_nn_lstm(y, self.dropout, input if packed else None)

        layer_input, h_n, c_n = functional.lstm(
            x,
            h0,
            c0,
            [self.layer_weights(k) for k in range(self.num_layers)],
            lengths,
            resets=resets,
            between_layers=between_layers,
            backend=self.backend,
        )

        if packed:
            out = _repack(layer_input, input)
        elif not batched:
            out, h_n, c_n = layer_input.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        else:
            out = layer_input.transpose(0, 1) if self.batch_first else layer_input
        return out, (h_n, c_n)

    def _time_major_resets(self, resets, x: torch.Tensor, batched: bool, packed: bool):
        """resets as the user lays it out -> (T, B) bool on x's device (x (T, B, I) time-major):
        (T,) for an unbatched input, (B, T) with batch_first, else (T, B); a PackedSequence's
        padded layout in the original batch order."""
        where = "LSTM"
        T, B = x.shape[0], x.shape[1]
        check_tensor(resets, "resets", where=where)
        if not batched:
            layout = "(T,)"
            if resets.dim() != 1 or resets.shape[0] != T:
                raise ValueError(
                    f"{where}: resets has shape {tuple(resets.shape)}, expected "
                    f"(T,) = ({T},) for an unbatched input: one flag per step"
                )
            resets = resets.unsqueeze(1)
        elif self.batch_first:
            layout = "(B, T) (batch_first)"
            if resets.dim() != 2 or tuple(resets.shape) != (B, T):
                raise ValueError(
                    f"{where}: resets has shape {tuple(resets.shape)}, expected "
                    f"(B, T) = {(B, T)} (batch_first"
                    f"{', T the longest length' if packed else ''})"
                )
            resets = resets.t()
        else:
            layout = "(T, B)" + (" (T the longest length)" if packed else "")
        return check_resets(resets, x, where=where, layout=layout)

    def initial_state(self, hx, x: torch.Tensor, batched: bool = True, nn_errors: bool = False):
        """(h_0 (L*D, B, R), c_0 (L*D, B, H)) for the time-major input x (T, B, I): hx checked
        against x (unbatched hx (L*D, R) / (L*D, H) when not batched), or zeros. nn_errors: the
        exception types nn.LSTM raises (RuntimeError for a state that does not fit); else
        ValueError for a shape, TypeError for a dtype."""
        where = "LSTM"
        B, LD, H = x.shape[1], self.num_layers * self.num_directions, self.hidden_size
        R = self.proj_size if self.proj_size > 0 else H
        shape_exc, dtype_exc = (
            (RuntimeError, RuntimeError) if nn_errors else (ValueError, TypeError)
        )
        if hx is None:
            return x.new_zeros((LD, B, R)), x.new_zeros((LD, B, H))
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise TypeError(f"{where}: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        h0, c0 = hx
        check_tensor(h0, "h_0", where=where)
        check_tensor(c0, "c_0", where=where)
        dims = 3 if batched else 2
        if nn_errors and (h0.dim() != dims or c0.dim() != dims):
            raise RuntimeError(
                f"{where}: for {'batched 3-D' if batched else 'unbatched 2-D'} "
                f"input, h_0 and c_0 must be {dims}-D too, got ({h0.dim()}-D, "
                f"{c0.dim()}-D)"
            )
        for name, t, size in (("h_0", h0, R), ("c_0", c0, H)):
            expected = (LD, B, size) if batched else (LD, size)
            check_shape(t, name, expected, where=where, exc=shape_exc)
            check_device(t, name, x.device, where=where)
            if not torch._C._is_any_autocast_enabled():  # autocast casts, as torch.nn allows
                check_dtype(t, name, x.dtype, where=where, exc=dtype_exc)
        if not batched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        return h0, c0


def _dropout_like_nn_lstm(y: torch.Tensor, p: float, packed: Optional[PackedSequence]):
    """Dropout between layers with the random numbers nn.LSTM draws on the CPU for the same seed.

    ATen's LSTM (native and oneDNN paths alike) calls at::dropout(layer_output, p, train=True)
    on the layer output as it holds it: (T, B, D*R) contiguous for a padded input (batch_first is
    transposed away before the layers), or the packed data (N, D*R) of a PackedSequence. The mask
    is a function of that layout, so for a packed input it is drawn on the packed layout (one
    F.dropout of ones: exactly at::dropout's noise, bernoulli(1-p) / (1-p)) and laid back onto
    y's padded (T, B, D*R) layout; y * noise is then what at::dropout computes, bit for bit,
    forward and backward. On CUDA nn.LSTM runs cuDNN, whose dropout has its own generator state,
    so no library outside cuDNN reproduces its masks; there the same at::dropout call is made.
    """
    if packed is None:
        return F.dropout(y, p=p, training=True)
    noise = F.dropout(y.new_ones((packed.data.shape[0], y.shape[-1])), p=p, training=True)
    noise, _ = pad_packed_sequence(
        PackedSequence(noise, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices),
        total_length=y.shape[0],
    )
    return y * noise


def _repack(y: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """y (T, B, F) in the original batch order -> a PackedSequence laid out exactly like `like`."""
    if like.sorted_indices is not None:
        y = y.index_select(1, like.sorted_indices)
    sizes = like.batch_sizes  # a host tensor: the lengths in packed order come from it, so no
    # device value is read back to the host
    if forward_ad._current_level >= 0:
        # pack_padded_sequence has no forward-mode AD formula: gather the packed rows (time
        # step t, then the first batch_sizes[t] sequences) by index instead.
        steps = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
        rows = torch.arange(steps.numel()) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
        data = y[steps.to(y.device), rows.to(y.device)]
    else:
        lengths = (sizes.unsqueeze(0) > torch.arange(y.shape[1]).unsqueeze(1)).sum(1)  # (B,)
        data = pack_padded_sequence(y, lengths, enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class LSTMCell(nn.Module):
    """nn.LSTMCell with fused kernels. input (B, I) or (I,); hx = (h (B, H), c (B, H)) or
    unbatched (H,); returns (h', c') of the same shapes."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        peephole: bool = False,
        backend: str = "auto",
    ):
        super().__init__()
        _check_cell_args(input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.peephole = peephole
        self.backend = check_name(backend)
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
                self.register_parameter(
                    f"weight_{gate}", nn.Parameter(torch.empty(hidden_size, **factory))
                )
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
        if self.bias is not True:  # nn.LSTMCell's test: bias=0 prints as given
            s += f", bias={self.bias}"
        if self.peephole:
            s += ", peephole=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def forward(self, input, hx: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        where = "LSTMCell"
        check_tensor(input, "input", where=where)
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{where}: input must be 1-D (I,) or 2-D (B, I), got "
                f"{input.dim()}-D with shape {tuple(input.shape)}"
            )
        if hx is not None:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"{where}: hx must be a tuple (h, c), got {type(hx).__name__}")
            for name, t in zip(("h", "c"), hx):
                check_tensor(t, name, where=where)
                if t.dim() not in (1, 2):
                    raise ValueError(
                        f"{where}: {name} must be 1-D (H,) or 2-D (B, H), got "
                        f"{t.dim()}-D with shape {tuple(t.shape)}"
                    )
        # Past the numbers of dimensions nn.LSTMCell raises RuntimeError for what does not fit.
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"{where}: input has {input.shape[-1]} features in its last "
                f"dimension, expected input_size={self.input_size}"
            )
        check_device(input, "input", self.weight_ih.device, where=where)
        autocast = torch._C._is_any_autocast_enabled()  # autocast casts, as torch.nn allows
        if not autocast:
            check_dtype(input, "input", self.weight_ih.dtype, where=where, exc=RuntimeError)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h, c = x.new_zeros((B, H)), x.new_zeros((B, H))
        else:
            h, c = hx
            for name, t in (("h", h), ("c", c)):
                check_shape(t, name, (B, H) if batched else (H,), where=where, exc=RuntimeError)
                check_device(t, name, x.device, where=where)
                if not autocast:
                    check_dtype(t, name, x.dtype, where=where, exc=RuntimeError)
            if not batched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        # One step of a one-direction layer: x (1, B, I), states (1, B, H).
        # the weights as a one-direction layer takes them: (1, 4H, I), (1, 4H, H) views, kept
        # between calls that record nothing; the summed bias and peepholes made every call
        weight_ih, weight_hh = self.weight_ih, self.weight_hh
        w_ih, w_hh = functional.kept_weights(
            self, [weight_ih, weight_hh], lambda: (weight_ih.unsqueeze(0), weight_hh.unsqueeze(0))
        )
        bias = (self.bias_ih + self.bias_hh).unsqueeze(0) if self.bias else None
        w_peep = None
        if self.peephole:
            w_peep = torch.stack([self.weight_ci, self.weight_cf, self.weight_co]).unsqueeze(0)
        _y, h_n, c_n = functional.lstm_layer(
            x.unsqueeze(0),
            h.unsqueeze(0),
            c.unsqueeze(0),
            w_ih,
            w_hh,
            bias,
            None,
            w_peep,
            None,
            backend=self.backend,
        )
        h_n, c_n = h_n[0], c_n[0]
        if h_n.dtype != c.dtype and torch.is_autocast_enabled(x.device.type):
            # nn.LSTMCell under autocast: the gate matmuls in the autocast dtype, the cell
            # update promoted with c's dtype (float32 for a float32 state)
            out = torch.promote_types(h_n.dtype, c.dtype)
            h_n, c_n = h_n.to(out), c_n.to(out)
        if not batched:
            h_n, c_n = h_n[0], c_n[0]
        return h_n, c_n
