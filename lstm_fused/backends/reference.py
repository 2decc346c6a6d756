"""backend="reference": plain PyTorch (lstm_fused/reference.py), any device and dtype."""
from __future__ import annotations

from .. import reference
from .base import LSTMLayerBackend


class ReferenceLSTM(LSTMLayerBackend):
    name = "reference"

    def lstm_layer(self, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths):
        return reference.lstm_layer(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths)
