"""A training script written for nn.LSTM (tools/word_language_model.py: the recipe of PyTorch's
word language model example) gives the same loss at every step after replace_lstm, dropout on.

"The same" is measured, not assumed: float32 training at the example's learning rate (20) is
chaotic, so two runs that differ by rounding part after some steps. The envelope that rounding
explains is measured by training nn.LSTM against itself with every weight nudged by one ulp
(torch.nextafter, up and down); lstm_fused's difference from nn.LSTM must stay within a small
multiple of that envelope at every step. (Its kernels round differently at every step, not
once at the start, so its difference runs about twice the one-ulp envelope.)
"""

from __future__ import annotations

import importlib.util
import pathlib

import pytest
import torch
from torch import nn

import lstm_fused

_TOOL = pathlib.Path(__file__).resolve().parents[1] / "tools" / "word_language_model.py"
_spec = importlib.util.spec_from_file_location("word_language_model", _TOOL)
wlm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wlm)

STEPS = 30  # before the curves part at lr 20 (measured: around step 35)
ARGS = "--emsize 64 --nhid 64 --nlayers 2 --tied --bptt 20 --batch-size 10 --dropout 0.2"
ENVELOPE_FACTOR = 4  # measured: lstm_fused's difference is at most about 2.2 x the envelope


@pytest.fixture(scope="module")
def corpus():
    """(vocabulary size, training data (S, B)) of the script's text."""
    vocab, train_ids, _valid = wlm.load_corpus()
    return len(vocab), wlm.batchify(train_ids, wlm.parse_args(ARGS.split()).batch_size)


@pytest.fixture
def one_thread():
    """Small matrices: more threads only cost time on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def curves(corpus):
    """Loss per step: nn.LSTM, lstm_fused (replace_lstm), nn.LSTM with weights one ulp up/down."""
    args = wlm.parse_args(ARGS.split())
    ntoken, data = corpus
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(fused=False, nudge=None):
        model = wlm.build_model(ntoken, args, fused)
        assert isinstance(model.rnn, lstm_fused.LSTM if fused else nn.LSTM)
        if nudge is not None:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.nextafter(p, torch.tensor(nudge)))
        return torch.tensor(
            wlm.train_losses(model, data, STEPS, lr=args.lr, clip=args.clip, bptt=args.bptt),
            dtype=torch.float64,
        )

    try:
        return dict(
            torch=run(),
            fused=run(fused=True),
            up=run(nudge=float("inf")),
            down=run(nudge=float("-inf")),
        )
    finally:
        torch.set_num_threads(threads)


def _ulp32(values: torch.Tensor) -> torch.Tensor:
    v = values.float()
    return (torch.nextafter(v, torch.tensor(float("inf"))) - v).double()


def test_replace_lstm_follows_the_nn_lstm_loss_curve_with_dropout(curves):
    base = curves["torch"]
    assert base[-5:].mean() < base[0] - 1.0, "the script did not train"
    envelope = torch.maximum((curves["up"] - base).abs(), (curves["down"] - base).abs())
    # Rounding differences only grow with the steps: the envelope at step t is the largest
    # seen up to t, and never less than the loss's own float32 rounding (ulp).
    envelope = torch.maximum(torch.cummax(envelope, 0).values, _ulp32(base))
    fused_diff = (curves["fused"] - base).abs()
    assert envelope.max() > _ulp32(base).max(), "the one-ulp nudge changed nothing"
    bad = (fused_diff > ENVELOPE_FACTOR * envelope).nonzero().flatten().tolist()
    assert not bad, (
        f"steps {bad}: lstm_fused differs from nn.LSTM by "
        f"{fused_diff[bad].tolist()}, envelope {envelope[bad].tolist()}"
    )


def test_dropout_draws_the_same_masks_in_the_script(corpus, one_thread):
    """Three steps with dropout on and with it off: with the same seed lstm_fused and nn.LSTM
    agree to rounding either way, and dropout on changes the losses (so the same masks, not the
    absence of dropout, make them agree)."""
    ntoken, data = corpus
    losses = {}
    for fused in (False, True):
        for dropout in ("0.2", "0"):
            args = wlm.parse_args(ARGS.replace("--dropout 0.2", "--dropout " + dropout).split())
            model = wlm.build_model(ntoken, args, fused)
            losses[fused, dropout] = torch.tensor(
                wlm.train_losses(model, data, 3, lr=args.lr, bptt=args.bptt), dtype=torch.float64
            )
    for dropout in ("0.2", "0"):
        diff = (losses[True, dropout] - losses[False, dropout]).abs().max().item()
        assert diff <= 4 * _ulp32(losses[False, dropout]).max().item(), (dropout, diff)
    assert (losses[False, "0.2"] - losses[False, "0"]).abs().max() > 1e-2


# ------------------------------------------------------------ gradients of one's own (no alias)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradient_accumulation_and_clipping_match_nn_lstm(bidirectional):
    """Two backward passes into .grad, then clip_grad_norm_ (both act on .grad in place):
    every parameter's gradient equals nn.LSTM's. (Once bias_ih and bias_hh got their
    gradients as views of one buffer, and both changed twice.)"""
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    fused = lstm_fused.LSTM(3, 5, num_layers=2, bidirectional=bidirectional, dtype=torch.float64)
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    for module in (ref, fused):
        for _ in range(2):
            module(x)[0].pow(2).sum().backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.01)
    for (name, p), q in zip(ref.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-12, rtol=1e-10, msg=name)


def test_an_in_place_change_of_one_gradient_changes_no_other():
    models = [
        lstm_fused.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2),
        lstm_fused.LSTMCell(3, 4),
        lstm_fused.AttentiveLSTM(3, 4, 5, num_layers=2),
    ]
    for model in models:
        out = model(
            torch.randn(6, 2, 3)
            if not isinstance(model, lstm_fused.LSTMCell)
            else torch.randn(2, 3)
        )[0]
        out.sum().backward()
        params = dict(model.named_parameters())
        for name, p in params.items():
            before = {n: q.grad.clone() for n, q in params.items()}
            p.grad.add_(1.0)
            changed = [
                n for n, q in params.items() if n != name and not torch.equal(q.grad, before[n])
            ]
            assert not changed, f"{type(model).__name__}: adding to {name}.grad changed {changed}"
