"""Functional entry points: the layer call of every backend, and the attention ops."""
from __future__ import annotations

from typing import Optional

import torch

from . import backends


def lstm_layer(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, w_ih: torch.Tensor,
               w_hh: torch.Tensor, bias: Optional[torch.Tensor] = None,
               w_hr: Optional[torch.Tensor] = None, w_peep: Optional[torch.Tensor] = None,
               lengths: Optional[torch.Tensor] = None, *, backend: str = "auto"):
    """One LSTM layer, every direction, through the chosen backend; differentiable.

    x (T, B, I) time-major; h0 (D, B, R); c0 (D, B, H); w_ih (D, 4H, I); w_hh (D, 4H, R);
    bias (D, 4H) = b_ih + b_hh; w_hr (D, P, H); w_peep (D, 3, H) = (w_ci, w_cf, w_co);
    lengths (B,) int64 (steps t >= lengths[b] keep the state and output zeros).
    Direction 1 runs backwards in time. Returns y (T, B, D*R), h_n (D, B, R), c_n (D, B, H).
    """
    impl = backends.resolve(backend, "lstm_layer", x.device, x.dtype,
                            proj=w_hr is not None, peephole=w_peep is not None,
                            lengths=lengths is not None)
    # Contiguous time-major input and states: the kernels read them as such (a batch_first
    # input is copied here once, as the input projection would copy it anyway), and compiled
    # graphs then see the same strides as eager.
    return impl.lstm_layer(x.contiguous(), h0.contiguous(), c0.contiguous(), w_ih, w_hh, bias,
                           w_hr, w_peep, lengths)
