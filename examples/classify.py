"""Classify handwritten digits (the 8x8 digits shipped by scikit-learn) read as sequences of 8
rows of 8 pixels, cut to random lengths, with a bidirectional LSTM (packed sequences),
multi-head self-attention with key padding and additive attention pooling; trained side by
side with nn.LSTM and after lstm_fused.replace_lstm (examples/common.py says how).

    python -m examples.classify [--epochs N] [--device cpu|cuda] [--backend auto] [--smoke]
                                [--plot classify.png]

Each image keeps its first 4 to 8 rows (a fresh random cut every epoch in training, one fixed
cut for the test set), so a batch is padded and the padding must not leak: the LSTM gets a
PackedSequence, the attention the lengths. Baseline: always the most frequent training class.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import common

ROWS, MIN_ROWS = 8, 4


class DigitReader(nn.Module):
    """BiLSTM (packed) -> self-attention (residual) -> additive pooling -> Linear.
    x (B, 8, 8), lengths (B,) -> logits (B, 10)."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(
            ROWS, hidden, num_layers=2, dropout=dropout, bidirectional=True, batch_first=True
        )
        self.attention = common.TorchSelfAttention(2 * hidden, heads)
        self.pool = common.TorchAttentionPooling(2 * hidden, hidden)
        self.head = nn.Linear(2 * hidden, 10)

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.lstm(packed)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # (B, T, 2H)
        y = y + self.attention(y, lengths)[0]
        context, _ = self.pool(y, lengths)
        return self.head(context)


def load(smoke: bool):
    """(train x, train y, test x, test y): x (n, 8, 8) float32 in [0, 1], y (n,) int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    if smoke:
        x_tr, y_tr, x_te, y_te = x_tr[:480], y_tr[:480], x_te[:200], y_te[:200]
    return x_tr, y_tr, x_te, y_te


def cut(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) random lengths in [MIN_ROWS, ROWS]."""
    return torch.randint(MIN_ROWS, ROWS + 1, (n,), generator=gen)


def main(argv=None) -> common.Summary:
    args = common.parser("digits, nn.LSTM vs lstm_fused side by side", epochs=10).parse_args(argv)
    device = common.setup(args)
    x_tr, y_tr, x_te, y_te = load(args.smoke)
    print(
        f"digits: {len(x_tr)} training and {len(x_te)} test images as sequences of "
        f"{MIN_ROWS} to {ROWS} rows"
    )
    gen = torch.Generator().manual_seed(args.seed)
    len_te = cut(len(x_te), gen)
    batch = 16 if args.smoke else 32

    torch.manual_seed(args.seed)
    model = DigitReader(hidden=32 if args.smoke else 64, heads=4, dropout=args.dropout).to(device)
    sides = common.make_sides(model, args.backend, lambda p: torch.optim.Adam(p, lr=1e-2))

    def epoch():
        perm, lengths = torch.randperm(len(x_tr), generator=gen), cut(len(x_tr), gen)
        return [
            (x_tr[i].to(device), lengths[i].to(device), y_tr[i].to(device))
            for i in perm.split(batch)
        ]

    common.train(
        sides,
        [epoch] * args.epochs,
        lambda m, b: F.cross_entropy(m(b[0], b[1]), b[2]),
        device,
        args.seed,
        desc="classify",
    )

    test = [
        (x_te[i].to(device), len_te[i].to(device), y_te[i].to(device))
        for i in torch.arange(len(x_te)).split(batch)
    ]
    with torch.no_grad():
        for side in sides.values():
            side.model.eval()
            correct = sum((side.model(x, n).argmax(1) == y).sum().item() for x, n, y in test)
            side.metric = correct / len(x_te)
    majority = torch.bincount(y_tr).argmax()
    baseline = (y_te == majority).double().mean().item()
    common.time_inference(sides, test, lambda m, b: m(b[0], b[1]), device)
    summary = common.summarise(
        sides,
        "test accuracy",
        "most frequent class",
        baseline,
        higher_is_better=True,
        log_every=max(1, len(sides[common.NN].losses) // 15),
    )
    if args.plot:
        common.plot(args.plot, summary, "digits: training loss (cross-entropy)")
    return summary


if __name__ == "__main__":
    main()
