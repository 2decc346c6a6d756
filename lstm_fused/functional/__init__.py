"""The functional entry points of lstm_fused: every module calls these, and each picks the
implementation of its op family once per call (lstm_fused/ops/registry.py).

    lstm, lstm_layer, attentive_lstm            the LSTM (lstm.py)
    kept_weights                                 views of a module's weights kept between calls
                                                 that record nothing (lstm.py)
    masked_softmax, attention_pooling,
    channel_attention                            the attention heads (attention.py)
    multihead_self_attention,
    self_attention_core                          self-attention (mhsa.py)
"""

from .attention import attention_pooling, channel_attention, masked_softmax  # noqa: F401
from .lstm import attentive_lstm, kept_weights, lstm, lstm_layer  # noqa: F401
from .mhsa import multihead_self_attention, self_attention_core  # noqa: F401

__all__ = [
    "lstm",
    "lstm_layer",
    "attentive_lstm",
    "masked_softmax",
    "attention_pooling",
    "channel_attention",
    "multihead_self_attention",
    "self_attention_core",
]
