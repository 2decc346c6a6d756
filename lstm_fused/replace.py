"""replace_lstm: swap every nn.LSTM / nn.LSTMCell inside a model for the fused module."""

from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

from torch import nn
from torch.nn.utils import parametrize

try:  # torch's wrapper of hooks registered "with module" (a private class of torch 2.x)
    from torch.nn.modules.module import _WrappedHook
except ImportError:  # a torch without it keeps no weak reference to rewire
    _WrappedHook = None

from .ops.registry import check_name
from .lstm import LSTM, LSTMCell

# The per-module hook dicts of torch.nn.Module. The twin gets the very same dict objects, so the
# handles returned before the swap still remove their hooks.
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_is_full_backward_hook",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)

# What nn.LSTM.forward / nn.LSTMCell.forward run of their own class: a subclass that overrides
# one of these computes something the fused module does not.
_FORWARD_PATH = {
    nn.LSTM: (
        "forward",
        "check_forward_args",
        "check_input",
        "check_hidden_size",
        "get_expected_hidden_size",
        "get_expected_cell_size",
        "permute_hidden",
        "_update_flat_weights",
    ),
    nn.LSTMCell: ("forward",),
}


def _base(module: nn.Module):
    return nn.LSTM if isinstance(module, nn.LSTM) else nn.LSTMCell


def _overrides(module: nn.Module) -> List[str]:
    """The forward-path methods of nn.LSTM / nn.LSTMCell that type(module) overrides. Classes
    made by torch.nn.utils.parametrize override none."""
    base = _base(module)
    return [
        name
        for name in _FORWARD_PATH[base]
        if getattr(type(module), name) is not getattr(base, name)
    ]


def _move_hooks(old: nn.Module, new: nn.Module) -> None:
    for name in _HOOK_DICTS:
        if name in old.__dict__:
            new.__dict__[name] = old.__dict__[name]
    # Hooks registered "with module" (register_load_state_dict_pre_hook, for one) hold a weak
    # reference to their module: point them at the twin, or they die with the old module.
    for name in _HOOK_DICTS if _WrappedHook is not None else ():
        hooks = new.__dict__.get(name)
        if not isinstance(hooks, dict):
            continue
        for key, hook in list(hooks.items()):
            if isinstance(hook, _WrappedHook) and hook.with_module and hook.module() is old:
                hooks[key] = _WrappedHook(hook.hook, new)


def _fused_twin(old: nn.Module, backend: str) -> nn.Module:
    """The fused module equivalent to `old`, sharing its Parameter objects (so an optimizer
    built before the swap keeps training the same tensors), its parametrizations, buffers,
    submodules and hooks; built on the meta device so no memory is allocated for weights that
    are replaced at once."""
    if isinstance(old, nn.LSTM):
        with warnings.catch_warnings():  # nn.LSTM warned already of dropout with one layer
            warnings.simplefilter("ignore", UserWarning)
            new = LSTM(
                old.input_size,
                old.hidden_size,
                old.num_layers,
                old.bias,
                old.batch_first,
                old.dropout,
                old.bidirectional,
                old.proj_size,
                device="meta",
                backend=backend,
            )
    else:
        new = LSTMCell(old.input_size, old.hidden_size, old.bias, device="meta", backend=backend)
    parametrized = list(old.parametrizations) if parametrize.is_parametrized(old) else []
    names = [n for n, _ in new.named_parameters()]
    missing = [n for n in names if n not in parametrized and old._parameters.get(n) is None]
    if missing:
        raise RuntimeError(f"replace_lstm: {type(old).__name__} lacks parameters {missing}")
    for name in names:
        if name in parametrized:
            del new._parameters[name]  # made by the parametrization transfer below
        else:
            new._parameters[name] = old._parameters[name]
    for name, p in old._parameters.items():  # parameters a user registered on top
        new._parameters.setdefault(name, p)
    new._buffers.update(old._buffers)
    new._non_persistent_buffers_set |= old._non_persistent_buffers_set
    for name, child in old._modules.items():
        if name != "parametrizations":
            new._modules[name] = child
    if parametrized:
        # the same parametrization modules and the same original Parameters: the fused module
        # evaluates the parametrization at each forward and gradients reach the originals
        parametrize.transfer_parametrizations_and_params(old, new)
    _move_hooks(old, new)
    new.train(old.training)
    return new


def replace_lstm(
    module: nn.Module, backend: str = "auto", *, allow_subclasses: bool = False
) -> nn.Module:
    """Swap every nn.LSTM and nn.LSTMCell inside `module` (in place) for lstm_fused.LSTM /
    LSTMCell with the same weights, device, dtype and training mode; returns `module`
    (or the replacement, when `module` itself is an nn.LSTM / nn.LSTMCell).

    The replacement keeps what was attached to the module: its Parameter objects, forward,
    forward-pre, backward, state_dict and load_state_dict hooks, parametrizations
    (torch.nn.utils.parametrize), buffers and submodules. A module reachable from two parents
    is replaced once: both parents hold the same fused module afterwards.

    A subclass of nn.LSTM / nn.LSTMCell that overrides forward (or a method nn.LSTM's forward
    calls, such as check_forward_args or permute_hidden) is refused with a RuntimeError, since
    the fused module would not run its code; allow_subclasses=True replaces those too, and
    their overrides are then not used. Nothing is replaced when one is refused.
    """
    check_name(backend)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"replace_lstm: module must be a torch.nn.Module, got {type(module).__name__}"
        )
    targets: List[Tuple[nn.Module, str, nn.Module]] = []
    if isinstance(module, (nn.LSTM, nn.LSTMCell)):
        found = [("", module)]
    else:
        found = []
        for parent_name, parent in module.named_modules():  # each parent once
            for name, child in parent.named_children():
                if isinstance(child, (nn.LSTM, nn.LSTMCell)):
                    targets.append((parent, name, child))
                    found.append((f"{parent_name}.{name}" if parent_name else name, child))
    if not allow_subclasses:
        for path, child in found:
            overridden = _overrides(child)
            if overridden:
                raise RuntimeError(
                    f"replace_lstm: {path or 'module'} is a {type(child).__qualname__}, a "
                    f"subclass of nn.{_base(child).__name__} that overrides "
                    f"{', '.join(overridden)}; the fused module would not run that code. Pass "
                    f"allow_subclasses=True to replace it anyway (its overrides are then not "
                    f"used), or replace its inner modules yourself."
                )
    twins: Dict[int, nn.Module] = {}

    def twin(child):
        if id(child) not in twins:
            twins[id(child)] = _fused_twin(child, backend)
        return twins[id(child)]

    if not targets and found:
        return twin(module)
    for parent, name, child in targets:
        setattr(parent, name, twin(child))
    return module
