"""Backend choice (docs/contract.md, section 4) and replace_lstm."""

import copy

import pytest
import torch
from torch import nn

import lstm_fused
from lstm_fused import switches
from backends import resolve, skip_reason
from tolerances import tol

F64 = tol("float64_same_math", torch.float64)  # two float64 runs of the same math
F64_GRAD = tol("lstm", torch.float64)


def test_available_backends_on_this_machine():
    names = lstm_fused.available_backends()
    assert "cpu" in names and "reference" in names
    assert all(n in ("cuda", "triton", "cpu", "reference") for n in names)
    assert ("cuda" in names) == (skip_reason("lstm_layer", "cuda") is None)


def test_auto_picks_cpu_for_cpu_float32_and_reference_for_half():
    assert resolve("auto", "lstm_layer", "cpu", torch.float32).name == "cpu"
    assert resolve("auto", "lstm_layer", "cpu", torch.float64).name == "cpu"
    assert resolve("auto", "lstm_layer", "cpu", torch.bfloat16).name == "reference"


def test_backend_switch_overrides_auto_only():
    with switches.override(backend="reference"):
        assert resolve("auto", "lstm_layer", "cpu", torch.float32).name == "reference"
        assert resolve("cpu", "lstm_layer", "cpu", torch.float32).name == "cpu"


def test_named_backend_never_falls_back():
    with pytest.raises(RuntimeError, match="backend 'cpu' cannot run .* bfloat16"):
        resolve("cpu", "lstm_layer", "cpu", torch.bfloat16)


def test_reference_backend_runs_bfloat16_on_cpu():
    m = lstm_fused.LSTM(4, 6, dtype=torch.bfloat16)  # auto -> reference for bf16 on the CPU
    y, _ = m(torch.randn(3, 2, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 5), nn.Tanh())
        self.lstm = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.inner = nn.ModuleDict(
            {"cell": nn.LSTMCell(14, 6), "proj": nn.LSTM(14, 8, proj_size=3)}
        )
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        y, _ = self.lstm(self.enc(x))
        y2, _ = self.inner["proj"](y.transpose(0, 1))
        h, c = self.inner["cell"](y[:, -1])
        return self.head(h) + y2.sum()


def test_replace_lstm_keeps_outputs_gradients_and_parameters():
    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    ref = copy.deepcopy(model)
    params_before = {n: p for n, p in model.named_parameters()}
    out = lstm_fused.replace_lstm(model)
    assert out is model
    assert isinstance(model.lstm, lstm_fused.LSTM) and model.lstm.batch_first
    assert isinstance(model.inner["cell"], lstm_fused.LSTMCell)
    assert isinstance(model.inner["proj"], lstm_fused.LSTM) and model.inner["proj"].proj_size == 3
    # the very same Parameter objects: an optimizer built before the swap still trains them
    for n, p in model.named_parameters():
        assert p is params_before[n], n
    torch.testing.assert_close(model(x), ref(x), **F64)
    g = torch.autograd.grad(model(x).sum(), list(model.parameters()))
    g_ref = torch.autograd.grad(ref(x).sum(), list(ref.parameters()))
    for a, e in zip(g, g_ref):
        torch.testing.assert_close(a, e, **F64_GRAD)


def test_replace_lstm_on_a_bare_lstm_and_training_mode():
    lstm = nn.LSTM(3, 4).eval()
    fused = lstm_fused.replace_lstm(lstm, backend="reference")
    assert isinstance(fused, lstm_fused.LSTM) and fused.backend == "reference"
    assert not fused.training
    assert fused.weight_ih_l0 is lstm.weight_ih_l0
    assert fused.weight_ih_l0.device.type == "cpu"


def test_replace_lstm_rejects_a_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        lstm_fused.replace_lstm(nn.LSTM(3, 4), backend="gpu")


def test_replace_lstm_keeps_hooks_and_their_handles():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2)
    seen = []
    handles = [
        lstm.register_forward_pre_hook(lambda m, args: seen.append(("pre", m))),
        lstm.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(("pre_kw", m)), with_kwargs=True
        ),
        lstm.register_forward_hook(lambda m, args, out: seen.append(("fwd", m))),
        lstm.register_full_backward_pre_hook(lambda m, g_out: seen.append(("bw_pre", m))),
        lstm.register_full_backward_hook(lambda m, g_in, g_out: seen.append(("bw", m))),
        lstm.register_state_dict_pre_hook(lambda m, prefix, keep_vars: seen.append(("sd_pre", m))),
        lstm.register_state_dict_post_hook(lambda m, sd, prefix, meta: seen.append(("sd", m))),
        lstm.register_load_state_dict_pre_hook(lambda m, *a: seen.append(("load_pre", m))),
        lstm.register_load_state_dict_post_hook(lambda m, keys: seen.append(("load", m))),
    ]
    model = nn.Sequential(lstm)
    ref_keys = lstm.state_dict().keys()
    lstm_fused.replace_lstm(model)
    seen.clear()
    fused = model[0]
    assert isinstance(fused, lstm_fused.LSTM)
    del lstm  # hooks that hold a weak reference to their module must now point at the twin
    x = torch.randn(5, 2, 3, requires_grad=True)
    fused(x)[0].sum().backward()
    fused.load_state_dict(fused.state_dict())
    kinds = [k for k, _ in seen]
    assert kinds == ["pre", "pre_kw", "fwd", "bw_pre", "bw", "sd_pre", "sd", "load_pre", "load"]
    assert all(m is fused for _, m in seen)
    assert fused.state_dict().keys() == ref_keys
    for h in handles:  # the handles taken before the swap still remove the hooks
        h.remove()
    seen.clear()
    fused(x)[0].sum().backward()
    fused.load_state_dict(fused.state_dict())
    assert seen == []


class _TwoParents(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.LSTM(3, 4)
        self.a = nn.Sequential(shared)
        self.b = nn.ModuleDict({"enc": shared})
        self.c = shared


def test_replace_lstm_keeps_a_shared_module_shared():
    model = _TwoParents()
    n_params = len(list(model.parameters()))
    lstm_fused.replace_lstm(model)
    assert isinstance(model.c, lstm_fused.LSTM)
    assert model.a[0] is model.c and model.b["enc"] is model.c
    assert len(list(model.parameters())) == n_params


class _Scale(nn.Module):
    """A parametrization with state of its own: weight -> scale * weight."""

    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(1.5, dtype=torch.float64))

    def forward(self, w):
        return self.scale * w


def test_replace_lstm_keeps_parametrizations():
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2, dtype=torch.float64)
    parametrize.register_parametrization(lstm, "weight_hh_l0", _Scale())
    parametrize.register_parametrization(lstm, "weight_ih_l1", _Scale())
    ref = copy.deepcopy(lstm)
    original = lstm.parametrizations.weight_hh_l0.original
    fused = lstm_fused.replace_lstm(lstm)
    assert isinstance(fused, lstm_fused.LSTM) and parametrize.is_parametrized(fused, "weight_hh_l0")
    assert fused.parametrizations.weight_hh_l0.original is original
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for _ in range(2):  # the parametrization is evaluated at each forward
        y, (h, c) = fused(x)
        y_r, (h_r, c_r) = ref(x)
        torch.testing.assert_close(y, y_r, **F64)
        g = torch.autograd.grad((y * y).sum() + h.sum(), [original])[0]
        g_r = torch.autograd.grad(
            (y_r * y_r).sum() + h_r.sum(), [ref.parametrizations.weight_hh_l0.original]
        )[0]
        torch.testing.assert_close(g, g_r, **F64)
        for m in (fused, ref):
            m.parametrizations.weight_hh_l0[0].scale.fill_(0.5)
    assert sorted(n for n, _ in fused.named_parameters()) == sorted(
        n for n, _ in ref.named_parameters()
    )


class _OwnForward(nn.LSTM):
    def forward(self, x, hx=None):
        y, state = super().forward(x, hx)
        return 2 * y, state


class _OwnChecks(nn.LSTM):
    def check_forward_args(self, input, hidden, batch_sizes):
        pass


class _JustInit(nn.LSTM):
    def __init__(self):
        super().__init__(3, 4)
        self.note = "no code of its own in forward"


@pytest.mark.parametrize(
    "cls, overridden", [(_OwnForward, "forward"), (_OwnChecks, "check_forward_args")]
)
def test_replace_lstm_refuses_subclasses_with_their_own_forward(cls, overridden):
    model = nn.Sequential(nn.LSTM(3, 4), nn.Sequential(cls(3, 4)))
    with pytest.raises(RuntimeError) as info:
        lstm_fused.replace_lstm(model)
    for w in ("1.0", cls.__name__, overridden, "allow_subclasses=True"):
        assert w in str(info.value), (w, str(info.value))
    assert type(model[0]) is nn.LSTM and type(model[1][0]) is cls  # nothing replaced
    lstm_fused.replace_lstm(model, allow_subclasses=True)
    assert isinstance(model[0], lstm_fused.LSTM) and isinstance(model[1][0], lstm_fused.LSTM)


def test_replace_lstm_takes_subclasses_that_keep_nn_lstms_forward():
    model = nn.Sequential(_JustInit())
    lstm_fused.replace_lstm(model)
    assert isinstance(model[0], lstm_fused.LSTM)
    with pytest.raises(RuntimeError, match="allow_subclasses"):
        lstm_fused.replace_lstm(_OwnForward(3, 4))


def test_replace_lstm_cell_keeps_hooks_parametrizations_and_sharing():
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    cell = nn.LSTMCell(3, 4, dtype=torch.float64)
    parametrize.register_parametrization(cell, "weight_hh", _Scale())
    calls = []
    cell.register_forward_hook(lambda m, args, out: calls.append(m))
    ref = copy.deepcopy(cell)
    model = nn.ModuleList([cell, nn.Sequential(cell)])
    lstm_fused.replace_lstm(model)
    fused = model[0]
    assert isinstance(fused, lstm_fused.LSTMCell) and model[1][0] is fused
    x = torch.randn(2, 3, dtype=torch.float64)
    h, c = fused(x)
    h_r, c_r = ref(x)
    torch.testing.assert_close(h, h_r, **F64)
    torch.testing.assert_close(c, c_r, **F64)
    assert calls[0] is fused  # ref's deepcopied hook appends ref, after
    g = torch.autograd.grad(h.sum(), [fused.parametrizations.weight_hh.original])[0]
    g_r = torch.autograd.grad(h_r.sum(), [ref.parametrizations.weight_hh.original])[0]
    torch.testing.assert_close(g, g_r, **F64)


def test_replace_lstm_does_not_repeat_nn_lstms_warning():
    with pytest.warns(UserWarning):
        lstm = nn.LSTM(3, 4, dropout=0.5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused = lstm_fused.replace_lstm(lstm)
    assert fused.dropout == 0.5
