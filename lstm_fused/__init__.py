"""lstm_fused: fused LSTM and attention kernels for PyTorch (CUDA C++, Triton, C++ CPU).

    import lstm_fused
    model = lstm_fused.replace_lstm(model)       # or nn.LSTM -> lstm_fused.LSTM

The contract (math, names, backends, errors) is docs/contract.md; how a call reaches a kernel
is docs/architecture.md; backends on this machine: available_backends(); the build and
everything a bug report needs: show_config() (or `python -m lstm_fused`).
"""

from . import ops  # noqa: F401  (registers every op family once)
from . import functional, reference
from .attention import AttentionPooling, AttentiveLSTM, ChannelAttention
from .frozen import FrozenLSTM, freeze_for_inference
from .info import show_config
from .lstm import LSTM, LSTMCell
from .mhsa import MultiheadSelfAttention
from .ops.registry import available_backends
from .replace import replace_lstm
from .serialization import safe_globals

# The one place the version is written: pyproject.toml reads it from here (setuptools'
# dynamic version, without importing the package).
__version__ = "0.1.0"

__all__ = [
    "LSTM",
    "LSTMCell",
    "replace_lstm",
    "freeze_for_inference",
    "FrozenLSTM",
    "available_backends",
    "functional",
    "reference",
    "AttentionPooling",
    "AttentiveLSTM",
    "ChannelAttention",
    "MultiheadSelfAttention",
    "safe_globals",
    "show_config",
]
