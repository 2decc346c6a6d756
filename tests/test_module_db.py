"""PyTorch's own module tests data for nn.LSTM and nn.LSTMCell, run through lstm_fused.

torch.testing._internal.common_modules.module_db (shipped in the torch wheel) lists, for each
torch.nn module, sample inputs (constructor and forward arguments) and error inputs (arguments
that must raise, with the exception type). The entries are read at test time, so the cases a
future PyTorch adds are checked too. Each sample: outputs, states and gradients (parameters and
inputs) against nn.LSTM / nn.LSTMCell; each error input: the same exception type as torch.nn
(the messages are lstm_fused's own). CPU, float32 and float64.
"""

import copy
import functools
import os

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import lstm_fused

from tolerances import tol

OURS = {nn.LSTM: lstm_fused.LSTM, nn.LSTMCell: lstm_fused.LSTMCell}


@functools.lru_cache(maxsize=None)
def _common_modules():
    """torch.testing._internal.common_modules, imported without leaving its side effects on
    this test session (it loads a hypothesis profile of its own and sets an environment
    variable)."""
    import hypothesis

    profile = hypothesis.settings.get_current_profile_name()
    env = dict(os.environ)
    from torch.testing._internal import common_modules

    hypothesis.settings.load_profile(profile)
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)
    return common_modules


def _info(cls):
    infos = [m for m in _common_modules().module_db if m.module_cls is cls]
    assert len(infos) == 1, f"module_db has {len(infos)} entries for {cls.__name__}"
    return infos[0]


def _leaves(obj):
    """The tensors that require grad in a (nested) forward argument or output."""
    if isinstance(obj, PackedSequence):
        return _leaves(obj.data)
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.requires_grad else []
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _leaves(o)]
    return []


def _tensors(obj):
    if isinstance(obj, PackedSequence):
        return [obj.data]
    if isinstance(obj, torch.Tensor):
        return [obj]
    return [t for o in obj for t in _tensors(o)]


def _run(module, args, kwargs):
    """Outputs (flattened) and the gradients of a fixed random weighting of them with respect
    to the module's parameters and the inputs that require grad."""
    outs = _tensors(module(*args, **kwargs))
    gen = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    wrt = list(module.parameters()) + _leaves((args, list(kwargs.values())))
    return outs, torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.LSTMCell], ids=["LSTM", "LSTMCell"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_db_samples_match_torch_nn(cls, dtype, training):
    info = _info(cls)
    samples = list(
        info.module_inputs_func(
            info, device="cpu", dtype=dtype, requires_grad=True, training=training
        )
    )
    assert samples, "module_db gives no sample inputs"
    for i, sample in enumerate(samples):
        c, f = sample.constructor_input, sample.forward_input
        torch.manual_seed(i)
        ref = cls(*c.args, **c.kwargs).to(dtype).train(training)
        ours = OURS[cls](*c.args, **c.kwargs).to(dtype).train(training)
        ours.load_state_dict(ref.state_dict())
        what = f"sample {i}: {cls.__name__}{c.args}{c.kwargs}"
        outs_r, grads_r = _run(ref, *copy.deepcopy((f.args, f.kwargs)))
        outs_o, grads_o = _run(ours, *copy.deepcopy((f.args, f.kwargs)))
        assert len(outs_o) == len(outs_r) and len(grads_o) == len(grads_r), what
        for k, (a, e) in enumerate(zip(outs_o + list(grads_o), outs_r + list(grads_r))):
            assert a.shape == e.shape and a.dtype == e.dtype, (what, k, a.shape, e.shape)
            torch.testing.assert_close(
                a, e, **tol("lstm", dtype), msg=lambda m, k=k, what=what: f"{what}, tensor {k}: {m}"
            )


@pytest.mark.parametrize("cls", [nn.LSTM, nn.LSTMCell], ids=["LSTM", "LSTMCell"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_module_db_error_inputs_raise_torch_nns_exception_types(cls, dtype):
    info = _info(cls)
    errors = list(
        info.module_error_inputs_func(
            info, device="cpu", dtype=dtype, requires_grad=False, training=True
        )
    )
    assert errors, "module_db gives no error inputs"
    construction = _common_modules().ModuleErrorEnum.CONSTRUCTION_ERROR
    for i, err in enumerate(errors):
        c, f = err.module_error_input.constructor_input, err.module_error_input.forward_input
        what = f"error input {i}: {cls.__name__}{c.args}{c.kwargs} ({err.error_regex})"
        for module_cls in (cls, OURS[cls]):  # torch.nn itself first: the case is what it says
            with pytest.raises(err.error_type) as info_exc:
                m = module_cls(*c.args, **c.kwargs)
                if err.error_on != construction:
                    m(*f.args, **f.kwargs)
            assert type(info_exc.value) is err.error_type or module_cls is cls, (
                what,
                module_cls,
                info_exc.value,
            )
            if module_cls is not cls:  # our message names what is wrong: never empty
                assert str(info_exc.value).startswith(cls.__name__ + ":"), (what, info_exc.value)
