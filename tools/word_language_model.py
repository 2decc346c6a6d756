"""A word-level LSTM language model trained the way PyTorch's word_language_model example
trains one, on a text that ships with Python; with --fused its nn.LSTM is swapped for
lstm_fused.LSTM by replace_lstm, and --compare trains both from the same seed side by side.

The recipe (an nn.LSTM training script as people write them):
- the text is a stream of word ids (each line's words and an "<eos>"), cut into B columns
  (`batchify`), and read in windows of `bptt` steps (`get_batch`);
- the model is Embedding -> dropout -> nn.LSTM (dropout between its layers) -> dropout ->
  Linear, optionally with the Linear's weight tied to the embedding's, then log_softmax, NLL;
- truncated back-propagation through time: the hidden state is carried from one window to the
  next but detached (`repackage_hidden`);
- the gradient norm is clipped, then plain SGD (p -= lr * grad) at the example's lr, 20.

The text: the help() topics of the standard library (pydoc_data.topics, about 65,000 words).

    python tools/word_language_model.py --steps 100            # nn.LSTM
    python tools/word_language_model.py --steps 100 --fused    # lstm_fused.LSTM
    python tools/word_language_model.py --steps 30 --compare   # both, loss per step
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

EOS = "<eos>"


class Vocabulary:
    """Words in order of first appearance; index(word) adds unseen words."""

    def __init__(self):
        self.ids: Dict[str, int] = {}
        self.words: List[str] = []

    def index(self, word: str) -> int:
        if word not in self.ids:
            self.ids[word] = len(self.words)
            self.words.append(word)
        return self.ids[word]

    def __len__(self) -> int:
        return len(self.words)


def tokenize(lines: List[str], vocab: Vocabulary) -> torch.Tensor:
    """Lines -> (N,) int64 word ids: each line's whitespace-separated words, then EOS."""
    return torch.tensor(
        [vocab.index(w) for line in lines for w in line.split() + [EOS]], dtype=torch.int64
    )


def load_corpus(valid_fraction: float = 0.1) -> Tuple[Vocabulary, torch.Tensor, torch.Tensor]:
    """The pydoc topics (sorted by name, so the stream is the same on every run), split by
    lines into a training and a validation stream. Returns (vocab, train ids, valid ids)."""
    from pydoc_data.topics import topics

    lines = [line for name in sorted(topics) for line in topics[name].splitlines()]
    cut = int(len(lines) * (1 - valid_fraction))
    vocab = Vocabulary()
    return vocab, tokenize(lines[:cut], vocab), tokenize(lines[cut:], vocab)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(N,) stream -> (N // B, B): B contiguous pieces of the stream side by side, the rest
    dropped. Column b continues from one window to the next, which is what lets the hidden
    state carry over."""
    steps = ids.numel() // batch_size
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


def get_batch(source: torch.Tensor, i: int, bptt: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Window i..i+bptt of source (S, B) -> (data (T, B), targets (T*B,)): the next word of
    every position, flattened in the order of the model's (T*B, V) output."""
    T = min(bptt, source.shape[0] - 1 - i)
    return source[i : i + T], source[i + 1 : i + 1 + T].reshape(-1)


def repackage_hidden(hidden):
    """Detach the carried state from the previous window's graph (truncated BPTT)."""
    if isinstance(hidden, torch.Tensor):
        return hidden.detach()
    return tuple(repackage_hidden(h) for h in hidden)


class RNNModel(nn.Module):
    """Embedding (V, E) -> dropout -> nn.LSTM(E, H, L, dropout) -> dropout -> Linear (H, V).

    forward(input (T, B) word ids, hidden ((L, B, H), (L, B, H))) ->
    (log-probabilities (T*B, V), hidden). tie_weights shares the embedding's (V, E) matrix
    with the decoder (needs E == H)."""

    def __init__(
        self,
        ntoken: int,
        ninp: int,
        nhid: int,
        nlayers: int,
        dropout: float = 0.5,
        tie_weights: bool = False,
    ):
        super().__init__()
        self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError(f"tie_weights needs nhid == ninp, got nhid={nhid}, ninp={ninp}")
            self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self) -> None:
        """Embedding and decoder U(-0.1, 0.1), decoder bias 0 (the LSTM keeps its own)."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input: torch.Tensor, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        logits = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(logits, dim=1), hidden

    def init_hidden(self, batch_size: int):
        w = next(self.parameters())
        shape = (self.nlayers, batch_size, self.nhid)
        return w.new_zeros(shape), w.new_zeros(shape)


def train_losses(
    model: RNNModel,
    train_data: torch.Tensor,
    steps: int,
    *,
    lr: float = 20.0,
    clip: float = 0.25,
    bptt: int = 35,
) -> List[float]:
    """`steps` windows of truncated-BPTT training (from the start of train_data (S, B), again
    from the start with a fresh state when it runs out); returns the loss of every step."""
    model.train()
    losses: List[float] = []
    while len(losses) < steps:
        hidden = model.init_hidden(train_data.shape[1])
        for i in range(0, train_data.shape[0] - 1, bptt):
            if len(losses) == steps:
                break
            data, targets = get_batch(train_data, i, bptt)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = F.nll_loss(output, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
            losses.append(loss.item())
    return losses


def evaluate(model: RNNModel, data: torch.Tensor, bptt: int = 35) -> float:
    """Mean NLL per word over data (S, B), dropout off."""
    model.eval()
    total, count = 0.0, 0
    hidden = model.init_hidden(data.shape[1])
    with torch.no_grad():
        for i in range(0, data.shape[0] - 1, bptt):
            x, targets = get_batch(data, i, bptt)
            output, hidden = model(x, hidden)
            total += F.nll_loss(output, targets, reduction="sum").item()
            count += targets.numel()
    return total / count


def build_model(ntoken: int, args, fused: bool) -> RNNModel:
    """The model from args, seeded; with fused, its nn.LSTM replaced by lstm_fused.LSTM."""
    torch.manual_seed(args.seed)
    model = RNNModel(ntoken, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied)
    if fused:
        import lstm_fused

        lstm_fused.replace_lstm(model)
    return model


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--emsize", type=int, default=200)
    p.add_argument("--nhid", type=int, default=200)
    p.add_argument("--nlayers", type=int, default=2)
    p.add_argument("--lr", type=float, default=20.0)
    p.add_argument("--clip", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--bptt", type=int, default=35)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--tied", action="store_true")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--steps", type=int, default=100, help="training windows (steps of SGD)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--fused", action="store_true", help="replace_lstm the model")
    group.add_argument(
        "--compare",
        action="store_true",
        help="train nn.LSTM and lstm_fused from the same seed, loss per step",
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    vocab, train_ids, valid_ids = load_corpus()
    train_data = batchify(train_ids, args.batch_size)
    valid_data = batchify(valid_ids, 10)
    print(
        f"vocabulary {len(vocab)} words, {train_ids.numel()} training words, "
        f"{valid_ids.numel()} validation words"
    )
    runs = [False, True] if args.compare else [args.fused]
    curves = {}
    for fused in runs:
        name = "lstm_fused" if fused else "nn.LSTM"
        model = build_model(len(vocab), args, fused)
        start = time.perf_counter()
        curves[name] = train_losses(
            model, train_data, args.steps, lr=args.lr, clip=args.clip, bptt=args.bptt
        )
        seconds = time.perf_counter() - start
        val = evaluate(model, valid_data, args.bptt)
        print(
            f"{name}: {args.steps} steps in {seconds:.1f} s, last loss "
            f"{curves[name][-1]:.4f}, valid loss {val:.4f} (ppl {math.exp(val):.1f})"
        )
    if args.compare:
        a, b = curves["nn.LSTM"], curves["lstm_fused"]
        for step, (x, y) in enumerate(zip(a, b)):
            print(f"step {step:4d}  nn.LSTM {x:.6f}  lstm_fused {y:.6f}  diff {abs(x - y):.2e}")
        print(f"largest difference {max(abs(x - y) for x, y in zip(a, b)):.3e}")


if __name__ == "__main__":
    main()
