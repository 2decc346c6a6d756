"""One rule per contract item, across families: every public entry point (the modules, the
functional functions, the registered operators and their Triton twins) asked for the same bad
lengths and the same bad shapes raises the same exception type, and for lengths the same
message after its "<where>: " prefix (lstm_fused/_checks.py check_lengths, csrc/lengths.h)."""

import pytest
import torch

import lstm_fused
from lstm_fused import functional
from backends import LOAD_ERROR

pytestmark = pytest.mark.skipif(LOAD_ERROR is not None, reason=f"{LOAD_ERROR}")

OPS = torch.ops.lstm_fused
T, B, I, H, A, E, N = 4, 2, 3, 5, 6, 4, 2


def _rnd(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


# ----------------------------------------------------------------------- the entry points


def _layer_weights():
    return (_rnd(1, 4 * H, I), _rnd(1, 4 * H, H), _rnd(1, 4 * H), None, None)


def _layer_args(x=None):
    x = _rnd(T, B, I) if x is None else x
    return (x, torch.zeros(1, B, H), torch.zeros(1, B, H), *_layer_weights())


def _pool_params():
    return _rnd(A, H), _rnd(A), _rnd(A)


# name -> call(lengths, backend): each takes a sequence of T = 4 steps and B = 2 rows.
PUBLIC = {
    "functional.lstm": lambda L, be: functional.lstm(
        _rnd(T, B, I), torch.zeros(1, B, H), torch.zeros(1, B, H), [_layer_weights()], L, backend=be
    ),
    "functional.lstm_layer": lambda L, be: functional.lstm_layer(
        *_layer_args(), lengths=L, backend=be
    ),
    "functional.attentive_lstm": lambda L, be: functional.attentive_lstm(
        _rnd(T, B, I),
        torch.zeros(1, B, H),
        torch.zeros(1, B, H),
        [_layer_weights()],
        L,
        *_pool_params(),
        backend=be,
    ),
    "functional.masked_softmax": lambda L, be: functional.masked_softmax(
        _rnd(B, 3, T), L, backend=be
    ),
    "functional.attention_pooling": lambda L, be: functional.attention_pooling(
        _rnd(T, B, H), *_pool_params(), L, backend=be
    ),
    "functional.channel_attention": lambda L, be: functional.channel_attention(
        _rnd(T, B, E), L, gate=torch.sigmoid, backend=be
    ),
    "functional.multihead_self_attention": lambda L, be: functional.multihead_self_attention(
        _rnd(T, B, E), L, _rnd(3 * E, E), _rnd(3 * E), _rnd(E, E), _rnd(E), N, backend=be
    ),
    "functional.self_attention_core": lambda L, be: functional.self_attention_core(
        _rnd(B, N, T, 2), _rnd(B, N, T, 2), _rnd(B, N, T, 2), L, 0.5, backend=be
    ),
    "AttentionPooling": lambda L, be: lstm_fused.AttentionPooling(H, A, backend=be)(
        _rnd(T, B, H), L
    ),
    "ChannelAttention": lambda L, be: lstm_fused.ChannelAttention(E, backend=be)(_rnd(T, B, E), L),
    "MultiheadSelfAttention": lambda L, be: lstm_fused.MultiheadSelfAttention(E, N, backend=be)(
        _rnd(T, B, E), L
    ),
    "AttentiveLSTM": lambda L, be: lstm_fused.AttentiveLSTM(I, H, A, backend=be)(_rnd(T, B, I), L),
}


def _op_calls(suffix):
    """name -> call(lengths) of every operator that takes lengths, T = 4 steps, B = 2 rows."""

    def op(name):
        return getattr(OPS, name + suffix)

    x3, proj = _rnd(B, T, H), _rnd(B, T, A)
    q = _rnd(B, N, T, 2)
    lse = torch.zeros(B, N, T)
    y, gates, cells = _rnd(T, B, H), _rnd(1, T, B, 4 * H), _rnd(1, T, B, H)
    w_ih, w_hh, bias, _, _ = _layer_weights()
    x, h0, c0 = _rnd(T, B, I), torch.zeros(1, B, H), torch.zeros(1, B, H)
    return {
        "lstm_layer_forward": lambda L: op("lstm_layer_forward")(
            x, h0, c0, w_ih, w_hh, bias, None, None, L
        ),
        "lstm_layer_inference": lambda L: op("lstm_layer_inference")(
            x, h0, c0, w_ih, w_hh, bias, None, None, L
        ),
        "lstm_layer_backward": lambda L: op("lstm_layer_backward")(
            y, h0, c0, x, h0, c0, w_ih, w_hh, None, None, L, None, y, gates, cells
        ),
        "attentive_lstm_inference": lambda L: op("attentive_lstm_inference")(
            x, h0, c0, w_ih, w_hh, bias, None, None, L, _rnd(A, H), _rnd(A), _rnd(A), None, 2
        ),
        "masked_softmax_forward": lambda L: op("masked_softmax_forward")(_rnd(B, T), L, None, 1.0),
        "attention_pooling_forward": lambda L: op("attention_pooling_forward")(
            x3, proj, _rnd(A), None, L
        ),
        "attention_pooling_backward": lambda L: op("attention_pooling_backward")(
            _rnd(B, H), _rnd(B, T), _rnd(B), x3, proj, _rnd(A), None, L, _rnd(B, T), _rnd(B, H)
        ),
        "channel_masked_mean_forward": lambda L: op("channel_masked_mean_forward")(x3, L),
        "channel_masked_mean_backward": lambda L: op("channel_masked_mean_backward")(
            _rnd(B, H), x3, L
        ),
        "channel_rescale_forward": lambda L: op("channel_rescale_forward")(x3, _rnd(B, H), L),
        "channel_rescale_backward": lambda L: op("channel_rescale_backward")(x3, x3, _rnd(B, H), L),
        "mhsa_forward": lambda L: op("mhsa_forward")(q, q, q, L, 0.5),
        "mhsa_backward": lambda L: op("mhsa_backward")(q, q, q, q, L, 0.5, 0.0, None, q, lse),
    }


# (C++ kernels, Triton twins: their C++ checks run before any Triton code)
OPERATOR_SUFFIXES = ("", "_triton")


def _raised(call):
    """(exception type, message after its '<where>: ' prefix) of call()."""
    with pytest.raises(Exception) as info:
        call()
    message = str(info.value).split("\n")[0]
    return type(info.value), message.split(": ", 1)[1]


def _only(outcomes: dict):
    """The one (type, message) every entry point gave; fails naming the ones that differ."""
    kinds = {}
    for name, outcome in outcomes.items():
        kinds.setdefault(outcome, []).append(name)
    assert len(kinds) == 1, "different errors for the same input:\n" + "\n".join(
        f"  {t.__name__}: {m!r} from {names}" for (t, m), names in kinds.items()
    )
    return next(iter(kinds))


# ----------------------------------------------------------------------- bad lengths

BAD_LENGTHS = {
    "above T": (
        torch.tensor([1, 9]),
        ValueError,
        "lengths[1] = 9 is out of range, expected 0 <= lengths[b] <= T = 4",
    ),
    "negative": (
        torch.tensor([-1, 2]),
        ValueError,
        "lengths[0] = -1 is out of range, expected 0 <= lengths[b] <= T = 4",
    ),
    "wrong shape": (torch.tensor([1, 2, 3]), ValueError, "lengths has shape (3,), expected (2,)"),
}


@pytest.mark.parametrize("case", list(BAD_LENGTHS))
def test_bad_lengths_one_type_and_message_everywhere(case):
    """The same bad lengths: one exception type and one message from every module, functional
    function (on the cpu and reference backends), operator and Triton twin."""
    lengths, exc, message = BAD_LENGTHS[case]
    outcomes = {
        f"{name} [{be}]": _raised(lambda: call(lengths.clone(), be))
        for name, call in PUBLIC.items()
        for be in ("cpu", "reference")
    }
    for suffix in OPERATOR_SUFFIXES:
        outcomes.update(
            {
                name + suffix: _raised(lambda: call(lengths.clone()))
                for name, call in _op_calls(suffix).items()
            }
        )
    assert _only(outcomes) == (exc, message)


def test_float_lengths_one_type_and_message():
    """Not integers: TypeError everywhere. The public functions take any integer dtype (and
    convert), the operators int64 only: one message each."""
    lengths = torch.tensor([1.0, 2.0])
    public = {
        f"{name} [{be}]": _raised(lambda: call(lengths, be))
        for name, call in PUBLIC.items()
        for be in ("cpu", "reference")
    }
    assert _only(public) == (
        TypeError,
        "lengths has dtype torch.float32, expected an integer dtype",
    )
    ops = {
        name + s: _raised(lambda: call(torch.tensor([1, 2], dtype=torch.int32)))
        for s in OPERATOR_SUFFIXES
        for name, call in _op_calls(s).items()
    }
    assert _only(ops) == (TypeError, "lengths has dtype torch.int32, expected torch.int64")


@pytest.mark.parametrize("name", list(PUBLIC))
def test_int32_lengths_are_lengths_everywhere(name):
    """Any integer dtype is accepted by every public entry point."""
    PUBLIC[name](torch.tensor([4, 1], dtype=torch.int32), "cpu")


def test_lengths_on_another_device():
    """lengths on the CPU or on the input's device; another device (here meta) is a
    RuntimeError, the type of a device mismatch, from every public entry point."""
    lengths = torch.tensor([4, 1], device="meta")
    outcomes = {name: _raised(lambda: call(lengths, "cpu")) for name, call in PUBLIC.items()}
    assert _only(outcomes) == (
        RuntimeError,
        "lengths is on meta, expected the CPU or the input's device (cpu)",
    )


def test_lengths_not_a_tensor():
    outcomes = {name: _raised(lambda: call([4, 1], "cpu")) for name, call in PUBLIC.items()}
    assert _only(outcomes) == (TypeError, "lengths must be a torch.Tensor, got list")


# ----------------------------------------------------------------------- bad shapes


def _wrong_rank_public():
    """x with one dimension too many, for every public entry point."""
    x4 = _rnd(T, B, 1, I)
    w = _layer_weights()
    return {
        "LSTM": lambda: lstm_fused.LSTM(I, H, backend="cpu")(x4),
        "functional.lstm_layer": lambda: functional.lstm_layer(*_layer_args(x4), backend="cpu"),
        "functional.lstm": lambda: functional.lstm(
            x4, torch.zeros(1, B, H), torch.zeros(1, B, H), [w], backend="cpu"
        ),
        "functional.attention_pooling": lambda: functional.attention_pooling(
            _rnd(T, B, 1, H), *_pool_params()
        ),
        "functional.channel_attention": lambda: functional.channel_attention(
            _rnd(T, B, 1, E), gate=torch.sigmoid
        ),
        "functional.multihead_self_attention": lambda: functional.multihead_self_attention(
            _rnd(T, B, 1, E), None, _rnd(3 * E, E), _rnd(3 * E), _rnd(E, E), _rnd(E), N
        ),
        "functional.self_attention_core": lambda: functional.self_attention_core(
            _rnd(B, N, T, 1, 2), _rnd(B, N, T, 1, 2), _rnd(B, N, T, 1, 2), None, 0.5
        ),
        "AttentionPooling": lambda: lstm_fused.AttentionPooling(H, A)(_rnd(T, B, 1, H)),
        "ChannelAttention": lambda: lstm_fused.ChannelAttention(E)(_rnd(T, B, 1, E)),
        "MultiheadSelfAttention": lambda: lstm_fused.MultiheadSelfAttention(E, N)(_rnd(T, B, 1, E)),
        "AttentiveLSTM": lambda: lstm_fused.AttentiveLSTM(I, H, A)(x4),
    }


def _second_tensor_misshaped_public():
    """The tensor that must match the first one (k to q, the score vector to the projection,
    the recurrent weights to the hidden size) with a wrong shape."""
    q = _rnd(B, N, T, 2)
    w_ih, w_hh, bias, _, _ = _layer_weights()
    return {
        "functional.self_attention_core (k)": lambda: functional.self_attention_core(
            q, _rnd(B, N, T, 3), q, None, 0.5
        ),
        "functional.attention_pooling (score_weight)": lambda: functional.attention_pooling(
            _rnd(T, B, H), _rnd(A, H), _rnd(A), _rnd(A + 1)
        ),
        "functional.lstm_layer (w_hh)": lambda: functional.lstm_layer(
            _rnd(T, B, I),
            torch.zeros(1, B, H),
            torch.zeros(1, B, H),
            w_ih,
            w_hh[..., :-1],
            bias,
            backend="cpu",
        ),
        "functional.masked_softmax (mask)": lambda: functional.masked_softmax(
            _rnd(B, T), mask=torch.ones(3, T, dtype=torch.bool)
        ),
    }


def _second_tensor_misshaped_ops(suffix):
    def op(name):
        return getattr(OPS, name + suffix)

    q = _rnd(B, N, T, 2)
    x3, proj = _rnd(B, T, H), _rnd(B, T, A)
    w_ih, w_hh, bias, _, _ = _layer_weights()
    x, h0, c0 = _rnd(T, B, I), torch.zeros(1, B, H), torch.zeros(1, B, H)
    return {
        "mhsa_forward (k)": lambda: op("mhsa_forward")(q, _rnd(B, N, T, 3), q, None, 0.5),
        "mhsa_forward (v)": lambda: op("mhsa_forward")(q, q, _rnd(B, N, T + 1, 2), None, 0.5),
        "attention_pooling_forward (v)": lambda: op("attention_pooling_forward")(
            x3, proj, _rnd(A + 1), None, None
        ),
        "channel_rescale_forward (w)": lambda: op("channel_rescale_forward")(
            x3, _rnd(B, H + 1), None
        ),
        "masked_softmax_forward (mask)": lambda: op("masked_softmax_forward")(
            _rnd(B, T), None, torch.ones(B, T + 1, dtype=torch.bool), 1.0
        ),
        "lstm_layer_forward (w_hh)": lambda: op("lstm_layer_forward")(
            x, h0, c0, w_ih, w_hh[..., :-1], bias, None, None, None
        ),
    }


def _types(calls):
    return {name: _raised(call)[0] for name, call in calls.items()}


def test_wrong_rank_is_a_value_error_everywhere():
    """x with a dimension too many: ValueError from every family (nn.LSTM's and
    nn.MultiheadAttention's types; the latter's is a ShapeError, also an AssertionError)."""
    got = _types(_wrong_rank_public())
    assert all(issubclass(t, ValueError) for t in got.values()), got


@pytest.mark.parametrize("suffix", OPERATOR_SUFFIXES)
def test_misshaped_second_tensor_is_a_value_error_everywhere(suffix):
    """A mis-shaped k, v, w, mask or weight: ValueError from every family, public functions
    and operators alike (a shape is a ValueError; nn.MultiheadAttention's assert on a key
    that does not fit is matched by ShapeError, a ValueError and an AssertionError)."""
    got = {
        **_types(_second_tensor_misshaped_public()),
        **_types(_second_tensor_misshaped_ops(suffix)),
    }
    assert all(issubclass(t, ValueError) for t in got.values()), got
    assert issubclass(got["functional.self_attention_core (k)"], AssertionError)


@pytest.mark.parametrize("suffix", OPERATOR_SUFFIXES)
def test_wrong_dtype_second_tensor_is_a_type_error_in_every_operator(suffix):
    """An operator's argument whose dtype is not x's: TypeError in every family."""

    def op(name):
        return getattr(OPS, name + suffix)

    q, x3, proj = _rnd(B, N, T, 2), _rnd(B, T, H), _rnd(B, T, A)
    w_ih, w_hh, bias, _, _ = _layer_weights()
    x, h0, c0 = _rnd(T, B, I), torch.zeros(1, B, H), torch.zeros(1, B, H)
    calls = {
        "mhsa_forward (k)": lambda: op("mhsa_forward")(q, q.double(), q, None, 0.5),
        "attention_pooling_forward (v)": lambda: op("attention_pooling_forward")(
            x3, proj, _rnd(A).double(), None, None
        ),
        "channel_rescale_forward (w)": lambda: op("channel_rescale_forward")(
            x3, _rnd(B, H).double(), None
        ),
        "lstm_layer_forward (w_hh)": lambda: op("lstm_layer_forward")(
            x, h0, c0, w_ih, w_hh.double(), bias, None, None, None
        ),
    }
    got = _types(calls)
    assert set(got.values()) == {TypeError}, got


def test_range_check_under_compile_is_a_device_assert():
    """Under torch.compile the range of lengths is not read on the host (that would break the
    graph): it becomes a device-side assert (torch._assert_async, as under CUDA graph capture),
    a RuntimeError with the same message when it fails."""

    def f(scores, lengths):
        return functional.masked_softmax(scores, lengths, backend="reference")

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    scores = torch.randn(2, 3, 4)
    good = torch.tensor([4, 1])
    torch.testing.assert_close(compiled(scores, good), f(scores, good))
    with pytest.raises(
        RuntimeError,
        match=r"lengths\[b\] is out of range, expected "
        r"0 <= lengths\[b\] <= T = 4",
    ):
        compiled(scores, torch.tensor([4, 9]))
