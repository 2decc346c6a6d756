"""Bad input (docs/contract.md, section 5) gets a clear error that names the argument, what it
got and expected."""

import os
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import lstm_fused
from lstm_fused import functional, switches
from backends import cases


def _lstm(**kw):
    return lstm_fused.LSTM(4, 6, backend="cpu", **kw)


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: _lstm()(torch.randn(2, 3, 4, 5)), ValueError, ["input", "2-D", "3-D", "4-D"]),
        # the exception types are nn.LSTM's for the same input (tests/test_module_db.py runs
        # PyTorch's own error inputs); the messages are lstm_fused's
        (lambda: _lstm()(torch.randn(2, 3, 5)), RuntimeError, ["input_size=4", "5 features"]),
        (
            lambda: _lstm()(torch.randn(2, 3, 4, dtype=torch.float64)),
            ValueError,
            ["input", "torch.float64", "torch.float32", "input.to(torch.float32)"],
        ),
        (
            lambda: _lstm()(torch.randn(2, 3, 4), (torch.zeros(1, 2, 6), torch.zeros(1, 3, 6))),
            RuntimeError,
            ["h_0", "(1, 2, 6)", "(1, 3, 6)"],
        ),
        (
            lambda: _lstm()(torch.randn(2, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(2, 3, 6))),
            RuntimeError,
            ["c_0", "(2, 3, 6)", "(1, 3, 6)"],
        ),
        (
            lambda: _lstm(proj_size=2)(
                torch.randn(2, 3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6))
            ),
            RuntimeError,
            ["h_0", "(1, 3, 2)"],
        ),
        (
            lambda: _lstm()(
                torch.randn(2, 3, 4),
                (torch.zeros(1, 3, 6, dtype=torch.float64), torch.zeros(1, 3, 6)),
            ),
            RuntimeError,
            ["h_0", "float64"],
        ),
        (lambda: _lstm()(torch.randn(2, 3, 4), torch.zeros(1, 3, 6)), TypeError, ["hx", "tuple"]),
        (
            lambda: _lstm()(torch.randn(3, 4), (torch.zeros(1, 3, 6), torch.zeros(1, 3, 6))),
            RuntimeError,
            ["unbatched 2-D", "h_0 and c_0", "3-D"],
        ),
        (
            lambda: _lstm()(torch.randn(3, 4), (torch.zeros(1, 5), torch.zeros(1, 6))),
            RuntimeError,
            ["h_0", "(1, 5)", "(1, 6)"],
        ),
        (
            lambda: _lstm()(torch.randn(2, 3, 4), (torch.zeros(3, 6), torch.zeros(3, 6))),
            RuntimeError,
            ["batched 3-D", "2-D"],
        ),
        (
            lambda: _lstm()(pack_sequence([torch.randn(3, 5), torch.randn(2, 5)])),
            RuntimeError,
            ["input_size=4", "5 features"],
        ),
        (lambda: _lstm()("not a tensor"), TypeError, ["input", "str"]),
        (
            lambda: _lstm().to(torch.float16)(torch.randn(2, 3, 4, dtype=torch.float16)),
            RuntimeError,
            ["backend 'cpu'", "float16"],
        ),
        (
            lambda: lstm_fused.LSTM(4, 6, backend="cuda")(torch.randn(2, 3, 4)),
            RuntimeError,
            ["backend 'cuda'"],
        ),
        (lambda: lstm_fused.LSTM(4, 6, backend="fast"), ValueError, ["backend", "'fast'", "auto"]),
        (lambda: lstm_fused.LSTM(4, 0), ValueError, ["hidden_size", "0"]),
        (lambda: lstm_fused.LSTM(4, 6, num_layers=0), ValueError, ["num_layers"]),
        (lambda: lstm_fused.LSTM(4, 6, proj_size=6), ValueError, ["proj_size", "hidden_size"]),
        (lambda: lstm_fused.LSTM(4, 6, dropout=1.5), ValueError, ["dropout", "1.5"]),
        (lambda: lstm_fused.LSTM(4, 6, 2, dropout="0.1"), ValueError, ["dropout", "'0.1'"]),
        (lambda: lstm_fused.LSTM(4.0, 6), TypeError, ["input_size", "float"]),
        (lambda: lstm_fused.LSTM(0, 6), ValueError, ["input_size", "greater than zero", "0"]),
        (lambda: lstm_fused.LSTM(4, 6, bias=0), TypeError, ["bias", "bool", "int"]),
        (lambda: lstm_fused.LSTM(4, 6, bias="True"), TypeError, ["bias", "bool", "str"]),
        (lambda: lstm_fused.LSTM(4, 6, batch_first=1), TypeError, ["batch_first", "bool", "int"]),
        (lambda: lstm_fused.LSTM(4, 6, proj_size=-1), ValueError, ["proj_size", "-1"]),
        (lambda: lstm_fused.LSTM(4, 6, num_layers=2.0), TypeError, ["num_layers", "float"]),
        (lambda: lstm_fused.LSTMCell(4, 6)(torch.randn(3, 5)), RuntimeError, ["input_size=4"]),
        (
            lambda: lstm_fused.LSTMCell(4, 6)(
                torch.randn(3, 4), (torch.zeros(2, 6), torch.zeros(3, 6))
            ),
            RuntimeError,
            ["h", "(2, 6)", "(3, 6)"],
        ),
        (
            lambda: lstm_fused.LSTMCell(4, 6)(
                torch.randn(4), (torch.zeros(3, 6), torch.zeros(3, 6))
            ),
            RuntimeError,
            ["h", "(3, 6)", "(6)"],
        ),
        (
            lambda: lstm_fused.LSTMCell(4, 6)(
                torch.randn(3, 4), (torch.zeros(3, 1, 6), torch.zeros(3, 6))
            ),
            ValueError,
            ["h", "1-D", "2-D", "3-D"],
        ),
        (
            lambda: lstm_fused.LSTMCell(4, 6)(torch.randn(3, 4, dtype=torch.float64)),
            RuntimeError,
            ["input", "torch.float64", "torch.float32"],
        ),
        (lambda: lstm_fused.LSTMCell(4, 6)(torch.randn(1, 3, 4)), ValueError, ["input", "3-D"]),
        (lambda: lstm_fused.replace_lstm("model"), TypeError, ["module", "str"]),
    ],
)
def test_module_errors(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def _layer_args(T=3, B=2, I=3, H=4, D=1):
    return [
        torch.randn(T, B, I),
        torch.randn(D, B, H),
        torch.randn(D, B, H),
        torch.randn(D, 4 * H, I),
        torch.randn(D, 4 * H, H),
    ]


@pytest.mark.parametrize("backend", cases("lstm_layer", ["cpu"]))
@pytest.mark.parametrize(
    "mutate, exc, words",
    [
        (
            lambda a: a.__setitem__(1, torch.randn(1, 3, 4)),
            ValueError,
            ["h0", "[1, 3, 4]", "[1, 2, 4]"],
        ),
        (lambda a: a.__setitem__(2, torch.randn(1, 2, 5)), ValueError, ["c0", "[1, 2, 5]"]),
        (lambda a: a.__setitem__(4, torch.randn(1, 16, 3)), ValueError, ["w_hh", "[1, 16, 3]"]),
        (
            lambda a: a.__setitem__(3, torch.randn(3, 16, 3)),
            ValueError,
            ["w_ih", "1 or 2 directions"],
        ),
        (lambda a: a.__setitem__(0, torch.randn(3, 2)), ValueError, ["x", "(T, B, I)"]),
        (
            lambda a: a.__setitem__(1, torch.randn(1, 2, 4, dtype=torch.float64)),
            TypeError,
            ["h0", "Double", "Float"],
        ),
    ],
)
def test_layer_op_errors(backend, mutate, exc, words):
    args = _layer_args()
    mutate(args)
    with pytest.raises(exc) as info:
        functional.lstm_layer(*args, backend=backend)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


@pytest.mark.parametrize(
    "lengths, exc, words",
    [
        (torch.tensor([3, 4]), ValueError, ["lengths[1] = 4", "T = 3"]),
        (torch.tensor([-1, 2]), ValueError, ["lengths[0] = -1"]),
        (torch.tensor([3]), ValueError, ["lengths has shape (1,), expected (2,)"]),
        (torch.tensor([3.0, 2.0]), TypeError, ["lengths has dtype torch.float32", "integer"]),
    ],
)
def test_layer_op_lengths_errors(lengths, exc, words):
    with pytest.raises(exc) as info:
        functional.lstm_layer(*_layer_args(), lengths=lengths, backend="cpu")
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_env_backend_override_is_checked():
    """A bad LSTM_FUSED_BACKEND is refused where the environment is read (once, by
    lstm_fused.switches), naming the variable; so is a bad override."""
    proc = subprocess.run(
        [sys.executable, "-c", "import lstm_fused, lstm_fused.switches"],
        env={**os.environ, "LSTM_FUSED_BACKEND": "nonsense"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "LSTM_FUSED_BACKEND=nonsense" in proc.stderr
    with pytest.raises(ValueError, match="LSTM_FUSED_BACKEND"):
        with switches.override(backend="nonsense"):
            lstm_fused.LSTM(4, 6)(torch.randn(2, 3, 4))
