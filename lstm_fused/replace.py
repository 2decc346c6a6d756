"""replace_lstm: swap every nn.LSTM / nn.LSTMCell inside a model for the fused module."""
from __future__ import annotations

from torch import nn

from . import backends
from .lstm import LSTM, LSTMCell


def _fused_twin(old: nn.Module, backend: str) -> nn.Module:
    """The fused module equivalent to `old`, sharing its Parameter objects (so an optimizer
    built before the swap keeps training the same tensors), built on the meta device so no
    memory is allocated for weights that are replaced at once."""
    if isinstance(old, nn.LSTM):
        new = LSTM(old.input_size, old.hidden_size, old.num_layers, old.bias, old.batch_first,
                   old.dropout, old.bidirectional, old.proj_size, device="meta",
                   backend=backend)
    else:
        new = LSTMCell(old.input_size, old.hidden_size, old.bias, device="meta", backend=backend)
    names = [n for n, _ in new.named_parameters()]
    old_params = dict(old.named_parameters())
    missing = [n for n in names if n not in old_params]
    if missing:
        raise RuntimeError(f"replace_lstm: {type(old).__name__} lacks parameters {missing}")
    for name in names:
        new._parameters[name] = old_params[name]
    new.train(old.training)
    return new


def replace_lstm(module: nn.Module, backend: str = "auto") -> nn.Module:
    """Swap every nn.LSTM and nn.LSTMCell inside `module` (in place) for lstm_fused.LSTM /
    LSTMCell with the same weights, device, dtype and training mode; returns `module`
    (or the replacement, when `module` itself is an nn.LSTM / nn.LSTMCell).

    Forward hooks registered on the replaced modules do not carry over.
    """
    backends.check_name(backend)
    if not isinstance(module, nn.Module):
        raise TypeError(f"replace_lstm: module must be a torch.nn.Module, got "
                        f"{type(module).__name__}")
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        return _fused_twin(module, backend)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.LSTM, nn.LSTMCell)):
                setattr(parent, name, _fused_twin(child, backend))
    return module
