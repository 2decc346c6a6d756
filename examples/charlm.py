"""A character language model of English prose that ships with Python (the help topics of the
standard library's pydoc_data, about 460 KB in 79 documents): a 2-layer LSTM over sequences of
hundreds of characters, packed (documents end at different points), trained side by side with
nn.LSTM and after lstm_fused.replace_lstm (examples/common.py says how); then a few lines
sampled from both models.

    python -m examples.charlm [--epochs N] [--device cpu|cuda] [--backend auto] [--smoke]
                              [--plot charlm.png] [--train-chars N]

Every 8th document (in the order of the topic names) is the test set. A document is cut into
chunks of T + 1 characters, its last chunk shorter, so a batch holds sequences of different
lengths and goes through the LSTM as a PackedSequence. Metric: bits per character on the test
documents; baseline: the training text's character frequencies (a unigram model).
"""

from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from . import common


class CharLM(nn.Module):
    """Embedding -> LSTM -> Linear. forward(tokens (B, T) int64, lengths (B,) or None,
    state) -> (logits, state): logits (B, T, V), or with lengths (N, V) for the N valid steps
    in PackedSequence order."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, lengths=None, state=None):
        x = self.embed(tokens)
        if lengths is None:
            y, state = self.lstm(x, state)
            return self.head(y), state
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        y, state = self.lstm(packed, state)
        return self.head(y.data), state


def load_documents() -> List[str]:
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def chunks(docs: List[str], stoi: dict, T: int) -> List[torch.Tensor]:
    """Each document cut into pieces of T characters (a piece of n gives n - 1 inputs and
    their next-character targets), the last piece shorter; pieces under 2 are dropped."""
    out = []
    for doc in docs:
        ids = torch.tensor([stoi[ch] for ch in doc], dtype=torch.int64)
        out += [p for p in ids.split(T) if len(p) >= 2]
    return out


def batches(pieces: List[torch.Tensor], order: torch.Tensor, B: int, device):
    """(tokens (B, T), targets (B, T), lengths (B,)), zero-padded, in the given order."""
    out = []
    for idx in order.split(B):
        seqs = [pieces[i] for i in idx.tolist()]
        lengths = torch.tensor([len(s) - 1 for s in seqs])
        tokens = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.int64)
        targets = torch.zeros_like(tokens)
        for k, s in enumerate(seqs):
            tokens[k, : len(s) - 1], targets[k, : len(s) - 1] = s[:-1], s[1:]
        out.append((tokens.to(device), targets.to(device), lengths.to(device)))
    return out


def loss_of(model, batch):
    """Mean cross-entropy (nats) over the valid steps of a batch."""
    tokens, targets, lengths = batch
    logits, _ = model(tokens, lengths)
    packed_targets = pack_padded_sequence(
        targets, lengths.cpu(), batch_first=True, enforce_sorted=False
    ).data
    return F.cross_entropy(logits, packed_targets)


@torch.no_grad()
def sample(
    model, prompt: str, n: int, stoi: dict, itos: list, seed: int, temperature: float = 0.7
) -> str:
    """`n` characters after `prompt`, one step at a time, drawn from its own generator."""
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    model.eval()
    logits, state = model(torch.tensor([[stoi[c] for c in prompt]], device=device))
    out = []
    for _ in range(n):
        probs = torch.softmax(logits[0, -1].double().cpu() / temperature, dim=0)
        nxt = int(torch.multinomial(probs, 1, generator=gen))
        out.append(itos[nxt])
        logits, state = model(torch.tensor([[nxt]], device=device), state=state)
    return prompt + "".join(out)


def main(argv=None) -> common.Summary:
    p = common.parser("character LM on pydoc_data, nn.LSTM vs lstm_fused side by side", epochs=1)
    p.add_argument(
        "--train-chars",
        type=int,
        default=None,
        help="train on the first N characters of the training documents only",
    )
    args = p.parse_args(argv)
    device = common.setup(args)
    docs = load_documents()
    itos = sorted(set("".join(docs)))
    stoi = {c: i for i, c in enumerate(itos)}
    train_docs = [d for k, d in enumerate(docs) if k % 8]
    test_docs = [d for k, d in enumerate(docs) if k % 8 == 0]
    T, B, embed, hidden = (100, 16, 32, 64) if args.smoke else (256, 16, 32, 128)
    if args.smoke:  # the first 80 000 characters of the training text, 20 000 of the test's
        train_docs, test_docs = _prefix(train_docs, 80_000), _prefix(test_docs, 20_000)
    elif args.train_chars:
        train_docs = _prefix(train_docs, args.train_chars)
    train_pieces, test_pieces = chunks(train_docs, stoi, T + 1), chunks(test_docs, stoi, T + 1)
    lengths = torch.tensor([len(p) - 1 for p in train_pieces])
    print(
        f"pydoc_data topics: {len(itos)} characters; {len(train_docs)} training documents "
        f"({sum(map(len, train_docs))} chars), {len(test_docs)} test documents "
        f"({sum(map(len, test_docs))} chars); T={T}; {len(train_pieces)} training sequences, "
        f"{int((lengths < T).sum())} of them shorter than T (ends of documents)"
    )

    torch.manual_seed(args.seed)
    model = CharLM(len(itos), embed, hidden, layers=2, dropout=args.dropout).to(device)
    sides = common.make_sides(model, args.backend, lambda p: torch.optim.Adam(p, lr=1e-2))
    gen = torch.Generator().manual_seed(args.seed)

    def epoch():
        return batches(train_pieces, torch.randperm(len(train_pieces), generator=gen), B, device)

    common.train(sides, [epoch] * args.epochs, loss_of, device, args.seed, desc="charlm")

    test = batches(test_pieces, torch.arange(len(test_pieces)), B, device)
    n_test = sum(int(b[2].sum()) for b in test)
    with torch.no_grad():
        for side in sides.values():
            side.model.eval()
            nats = sum(loss_of(side.model, b).item() * int(b[2].sum()) for b in test)
            side.metric = nats / n_test / math.log(2)
    counts = torch.bincount(torch.cat(train_pieces), minlength=len(itos)).double() + 1
    logp = torch.log2(counts / counts.sum())
    unigram = (
        -sum(
            logp[targets.cpu()][common.valid_mask(n.cpu(), targets.shape[1])].sum().item()
            for _, targets, n in test
        )
        / n_test
    )
    common.time_inference(sides, test, lambda m, b: m(b[0], b[2]), device, rounds=1)
    summary = common.summarise(
        sides,
        "test bits per character",
        "unigram",
        unigram,
        higher_is_better=False,
        log_every=max(1, len(sides[common.NN].losses) // 15),
    )
    texts = {
        name: sample(sides[name].model, "The ", 240, stoi, itos, args.seed)
        for name in (common.NN, common.FUSED)
    }
    same = "the same" if texts[common.NN] == texts[common.FUSED] else "different"
    print(
        f"\nsampled from the lstm_fused model (temperature 0.7; the nn.LSTM model's sample "
        f"with the same draws is {same}):"
    )
    print(texts[common.FUSED])
    if args.plot:
        common.plot(args.plot, summary, "pydoc_data character LM: training loss (nats/char)")
    return summary


def _prefix(docs: List[str], n: int) -> List[str]:
    """The documents, in order, up to about n characters in all."""
    out, total = [], 0
    for d in docs:
        if total >= n:
            break
        out.append(d[: n - total])
        total += len(out[-1])
    return out


if __name__ == "__main__":
    main()
