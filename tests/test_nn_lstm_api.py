"""lstm_fused.LSTM / LSTMCell against nn.LSTM / nn.LSTMCell beyond the numbers of a forward:
the dropout masks drawn for a seed, the attributes and methods user code reaches for, repr."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_fused

from helpers import assert_close


def _twins(dtype, backend, **kw):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, dtype=dtype, **kw)
    ours = lstm_fused.LSTM(3, 5, dtype=dtype, backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


# ---------------------------------------------------------------- dropout between layers

@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("kw", [dict(num_layers=3),
                                dict(num_layers=2, bidirectional=True, batch_first=True),
                                dict(num_layers=3, bidirectional=True, proj_size=2)],
                         ids=["L3", "L2-bi-bf", "L3-bi-proj"])
def test_dropout_masks_match_nn_lstm_for_the_same_seed(backend, dtype, packed, kw):
    """Same seed, same masks: outputs, states and gradients equal to nn.LSTM's in training, and
    the generator left in the same state (so a training loop's later draws stay in step)."""
    ref, ours = _twins(dtype, backend, dropout=0.4, **kw)
    bf = kw.get("batch_first", False)
    T, B = 6, 4
    x = torch.randn((B, T, 3) if bf else (T, B, 3), dtype=dtype, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 1])

    def run(m):
        inp = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False) if packed else x
        torch.manual_seed(7)
        out, (h, c) = m(inp)
        after = torch.rand(3)
        out = out.data if packed else out
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        grads = torch.autograd.grad((out * w).sum() + h.sum() + 2 * c.sum(), [x, *m.parameters()])
        return out, h, c, after, grads

    (o_r, h_r, c_r, a_r, g_r), (o_o, h_o, c_o, a_o, g_o) = run(ref), run(ours)
    assert torch.equal(a_o, a_r), "the generator is left in another state than nn.LSTM leaves it"
    assert_close(o_o, o_r, msg="output")
    assert_close(h_o, h_r, msg="h_n")
    assert_close(c_o, c_r, msg="c_n")
    for i, (a, e) in enumerate(zip(g_o, g_r)):
        assert_close(a, e, msg=f"gradient {i}")
    # and the masks did drop something: another seed gives another output
    torch.manual_seed(8)
    inp = pack_padded_sequence(x, lengths, batch_first=bf, enforce_sorted=False) if packed else x
    other = ours(inp)[0]
    assert not torch.allclose(other.data if packed else other, o_o)

