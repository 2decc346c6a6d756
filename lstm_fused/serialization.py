"""Safe loading of whole saved models that contain lstm_fused modules.

torch.load(..., weights_only=True) (the default since torch 2.6) unpickles only allow-listed
classes. A model saved whole (torch.save(model)) with lstm_fused modules inside needs their
classes, and the torch.nn classes they are built of, on that list:

    with torch.serialization.safe_globals(lstm_fused.safe_globals() + [MyModel, nn.Embedding]):
        model = torch.load(path, weights_only=True)

or once for the process: torch.serialization.add_safe_globals(lstm_fused.safe_globals()).
The classes of the user's own modules around them (MyModel above) are the user's to add.
"""

from __future__ import annotations

from typing import List

from torch import nn

from .attention import AttentionPooling, AttentiveLSTM, ChannelAttention
from .frozen import FrozenLSTM
from .lstm import LSTM, LSTMCell
from .mhsa import MultiheadSelfAttention


def safe_globals() -> List[type]:
    """The classes torch.load(weights_only=True) must allow to load any lstm_fused module:
    the lstm_fused modules and the torch.nn submodules they hold (Linear in the attention
    heads, Conv1d in ChannelAttention's "eca" mode). A new list on each call."""
    return [
        LSTM,
        LSTMCell,
        AttentionPooling,
        AttentiveLSTM,
        ChannelAttention,
        MultiheadSelfAttention,
        FrozenLSTM,
        nn.Linear,
        nn.Conv1d,
    ]
