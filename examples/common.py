"""What the examples share: the plain-PyTorch attention modules (peers of lstm_fused's, with the
same parameter names), the swap to lstm_fused, training models side by side, the printout and
the plot.

Side by side means: one model built with nn.LSTM and plain PyTorch, copied three ways --
"nn.LSTM" (as built), "lstm_fused" (replace_lstm plus lstm_fused's attention modules, same
weights), and two envelope sides "nn.LSTM+-1ulp/1" and "/2": the plain model with every
parameter moved one float step (torch.nextafter) up or down, at random, at the start and again
after every optimizer step. All are trained in lock step on the same batches, each step starting
from the same torch.manual_seed, so dropout draws the same numbers on every side. The envelope
is how far the plain model drifts from itself, step by step, when its weights are off by one
ulp at every step: the size of what a different order of float32 roundings (another GEMM
blocking, another reduction order: what lstm_fused changes) does to the same computation. A
single nudge at the start only is smaller, since lstm_fused's roundings differ at every step.
lstm_fused agrees with nn.LSTM when its loss differences are of the envelope's size.
Dimension letters: B batch, T time steps, D features, A attention size, C channels, E embed dim,
N heads.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

import lstm_fused
from lstm_fused.attention import eca_kernel_size

NN, FUSED = "nn.LSTM", "lstm_fused"
NUDGED = ("nn.LSTM+-1ulp/1", "nn.LSTM+-1ulp/2")  # the envelope's two sides


# ---- plain-PyTorch attention modules (the models' unfused side) ------------------------------


def valid_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) bool, True where t < lengths[b]."""
    return torch.arange(T, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


class TorchAttentionPooling(nn.Module):
    """Additive pooling: e_t = v . tanh(W h_t + b), alpha = softmax of e over the valid steps,
    c = sum_t alpha_t h_t. x (B, T, D), lengths (B,) or None -> (c (B, D), alpha (B, T)).
    Parameters proj = Linear(D, A), score = Linear(A, 1, bias=False), as
    lstm_fused.AttentionPooling."""

    def __init__(self, input_size: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(input_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, x, lengths=None):
        e = self.score(torch.tanh(self.proj(x))).squeeze(-1)  # (B, T)
        if lengths is not None:
            e = e.masked_fill(~valid_mask(lengths, x.shape[1]), float("-inf"))
        alpha = torch.softmax(e, dim=1)
        return torch.bmm(alpha.unsqueeze(1), x).squeeze(1), alpha


class TorchChannelAttention(nn.Module):
    """ECA channel attention: m = mean over the valid steps of x (B, C), w = sigmoid(conv1d_k(m))
    across channels, out = x * w (padded steps 0). x (B, T, C) -> (B, T, C). Parameter
    conv.weight (1, 1, k), as lstm_fused.ChannelAttention(mode="eca")."""

    def __init__(self, channels: int, kernel_size: Optional[int] = None):
        super().__init__()
        self.channels = channels
        self.kernel_size = kernel_size or eca_kernel_size(channels)
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=self.kernel_size // 2, bias=False)

    def forward(self, x, lengths=None):
        if lengths is None:
            mean = x.mean(dim=1)
            keep = None
        else:
            keep = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            mean = (x * keep).sum(dim=1) / lengths.clamp(min=1).unsqueeze(1).to(x.dtype)
        w = torch.sigmoid(self.conv(mean.unsqueeze(1)).squeeze(1)).unsqueeze(1)  # (B, 1, C)
        return x * w if keep is None else x * w * keep


class TorchSelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention as self-attention with key padding from lengths, batch first:
    forward(x (B, T, E), lengths (B,) or None) -> (out (B, T, E), None), the call of
    lstm_fused.MultiheadSelfAttention (same parameter names)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, x, lengths=None):
        pad = None if lengths is None else ~valid_mask(lengths, x.shape[1])
        out, _ = super().forward(x, x, x, key_padding_mask=pad, need_weights=False)
        return out, None


def _fused_attention(module: nn.Module, backend: str) -> Optional[nn.Module]:
    """lstm_fused's module for a plain attention module (same weights), or None."""
    like = next(module.parameters(), None)
    factory = {} if like is None else {"device": like.device, "dtype": like.dtype}
    if isinstance(module, TorchAttentionPooling):
        twin = lstm_fused.AttentionPooling(
            module.proj.in_features,
            module.proj.out_features,
            batch_first=True,
            backend=backend,
            **factory,
        )
    elif isinstance(module, TorchChannelAttention):
        twin = lstm_fused.ChannelAttention(
            module.channels,
            mode="eca",
            kernel_size=module.kernel_size,
            batch_first=True,
            backend=backend,
            **factory,
        )
    elif isinstance(module, TorchSelfAttention):
        # lstm_fused draws its attention dropout mask with its own counter-based generator,
        # not nn's draws: the examples keep attention dropout at 0 so the sides can agree.
        twin = lstm_fused.MultiheadSelfAttention(
            module.embed_dim,
            module.num_heads,
            dropout=module.dropout,
            batch_first=True,
            backend=backend,
            **factory,
        )
    else:
        return None
    twin.load_state_dict(module.state_dict(), strict=True)
    twin.train(module.training)
    return twin


def fused_copy(model: nn.Module, backend: str = "auto") -> nn.Module:
    """A copy of `model` with the one-line change (lstm_fused.replace_lstm) and lstm_fused's
    attention modules in place of the plain ones; same weights."""
    model = lstm_fused.replace_lstm(copy.deepcopy(model), backend=backend)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            twin = _fused_attention(child, backend)
            if twin is not None:
                setattr(parent, name, twin)
    return model


@torch.no_grad()
def nudge(model: nn.Module, gen: torch.Generator) -> None:
    """Move every parameter of `model` one float step up or down (each element's direction
    drawn from `gen`, a CPU generator of its own: the global one, which dropout uses, is
    left alone)."""
    for p in model.parameters():
        up = torch.rand(p.shape, generator=gen) < 0.5
        towards = torch.where(up, float("inf"), float("-inf")).to(p.device, p.dtype)
        p.copy_(torch.nextafter(p, towards))


# ---- training side by side ---------------------------------------------------------------------


@dataclass
class Side:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    losses: List[float] = field(default_factory=list)
    step_ms: List[float] = field(default_factory=list)
    infer_ms: List[float] = field(default_factory=list)
    metric: Optional[float] = None
    nudge: Optional[torch.Generator] = None  # envelope sides: nudged after every step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_sides(model: nn.Module, backend: str, make_optimizer: Callable) -> Dict[str, Side]:
    """The sides of one model (see the module docstring), each with its own optimizer."""
    sides = {NN: Side(model, make_optimizer(model.parameters()))}
    fused = fused_copy(model, backend)
    sides[FUSED] = Side(fused, make_optimizer(fused.parameters()))
    for k, name in enumerate(NUDGED):
        twin = copy.deepcopy(model)
        side = Side(
            twin, make_optimizer(twin.parameters()), nudge=torch.Generator().manual_seed(1000 + k)
        )
        nudge(twin, side.nudge)
        sides[name] = side
    return sides


def train(
    sides: Dict[str, Side],
    epochs: Sequence[Callable[[], list]],
    loss_fn: Callable,
    device: torch.device,
    seed: int,
    clip: float = 1.0,
    desc: str = "train",
) -> None:
    """Train every side on the same batches in lock step. `epochs`: one callable per epoch that
    returns its batches; loss_fn(model, batch) -> scalar loss. Before each side's step the
    global generator is reset to the same seed, so the sides' dropout draws are the same."""
    from tqdm import tqdm

    batches = [b for make in epochs for b in make()]
    for model in (s.model for s in sides.values()):
        model.train()
    for step, batch in enumerate(
        tqdm(batches, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)
    ):
        for side in sides.values():
            torch.manual_seed(seed * 100003 + step)
            _sync(device)
            start = time.perf_counter()
            side.optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(side.model, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(side.model.parameters(), clip)
            side.optimizer.step()
            _sync(device)
            side.step_ms.append((time.perf_counter() - start) * 1e3)
            side.losses.append(loss.item())
            if side.nudge is not None:
                nudge(side.model, side.nudge)


@torch.no_grad()
def time_inference(
    sides: Dict[str, Side], batches: list, forward: Callable, device: torch.device, rounds: int = 3
) -> None:
    """Time forward(model, batch) per batch in eval mode, the sides in turn batch by batch;
    one untimed warm-up round, then `rounds` timed ones."""
    for side in sides.values():
        side.model.eval()
    for r in range(rounds + 1):
        for batch in batches:
            for side in sides.values():
                _sync(device)
                start = time.perf_counter()
                forward(side.model, batch)
                _sync(device)
                if r:
                    side.infer_ms.append((time.perf_counter() - start) * 1e3)


def median_ms(samples: List[float], skip: int = 0) -> float:
    """Median of the samples after the first `skip` (warm-up) ones."""
    kept = samples[skip:] if len(samples) > skip else samples
    return statistics.median(kept)


# ---- the printout ----------------------------------------------------------------------------


@dataclass
class Summary:
    """What one side-by-side run measured (the tests assert on it)."""

    losses: Dict[str, List[float]]
    fused_diffs: List[float]  # per step, |loss lstm_fused - loss nn.LSTM|
    envelopes: List[float]  # per step, the larger |loss nn.LSTM+-1ulp/k - loss nn.LSTM|
    metric_name: str
    metrics: Dict[str, float]  # per side, plus the baseline's
    higher_is_better: bool
    step_ms: Dict[str, float]
    infer_ms: Dict[str, float]

    @property
    def fused_diff(self) -> float:
        return max(self.fused_diffs)

    @property
    def envelope(self) -> float:
        return max(self.envelopes)

    @property
    def worst_ratio(self) -> float:
        """The largest, over the steps, of |lstm_fused - nn.LSTM| over the envelope so far (its
        running maximum: the drift nn.LSTM has shown against itself up to that step), the
        envelope never taken below 4 float32 ulps of the loss (a few roundings of the loss
        itself, for the first steps where the envelope has not moved yet)."""
        worst, running = 0.0, 0.0
        for d, env, loss in zip(self.fused_diffs, self.envelopes, self.losses[NN]):
            running = max(running, env)
            worst = max(worst, d / max(running, 4 * torch.finfo(torch.float32).eps * abs(loss)))
        return worst

    def beats_baseline(self, side: str = FUSED) -> bool:
        m, base = self.metrics[side], self.metrics["baseline"]
        return m > base if self.higher_is_better else m < base


def summarise(
    sides: Dict[str, Side],
    metric_name: str,
    baseline_name: str,
    baseline: float,
    higher_is_better: bool,
    log_every: int,
    warmup_steps: int = 3,
) -> Summary:
    """Print the side-by-side table and return the figures."""
    losses = {name: s.losses for name, s in sides.items()}
    ref, fused = losses[NN], losses[FUSED]
    d_fused = [abs(a - b) for a, b in zip(fused, ref)]
    d_env = [
        max(abs(a - b), abs(c - b)) for a, c, b in zip(losses[NUDGED[0]], losses[NUDGED[1]], ref)
    ]
    n = len(ref)
    print(
        f"\n{'step':>6} {'loss ' + NN:>16} {'loss ' + FUSED:>17} {'|difference|':>13} "
        f"{'envelope':>10}"
    )
    for k in sorted(set(range(0, n, max(1, log_every))) | {n - 1}):
        print(f"{k + 1:>6} {ref[k]:>16.7f} {fused[k]:>17.7f} {d_fused[k]:>13.2e} {d_env[k]:>10.2e}")
    print(
        f"largest |loss difference| over {n} steps: lstm_fused vs nn.LSTM {max(d_fused):.2e}; "
        f"envelope (nn.LSTM vs itself, weights +-1 ulp every step) {max(d_env):.2e}"
    )
    metrics = {name: s.metric for name, s in sides.items()}
    metrics["baseline"] = baseline
    print(
        f"{metric_name}: nn.LSTM {metrics[NN]:.4f}   lstm_fused {metrics[FUSED]:.4f}   "
        f"{baseline_name} {baseline:.4f}"
    )
    step = {name: median_ms(s.step_ms, warmup_steps) for name, s in sides.items()}
    infer = {name: median_ms(s.infer_ms) for name, s in sides.items()}
    print(
        f"time per training step (median of {max(1, n - warmup_steps)}): nn.LSTM "
        f"{step[NN]:.2f} ms, lstm_fused {step[FUSED]:.2f} ms, {step[NN] / step[FUSED]:.2f}x"
    )
    print(
        f"time per inference batch (median of {len(sides[NN].infer_ms)}): nn.LSTM "
        f"{infer[NN]:.2f} ms, lstm_fused {infer[FUSED]:.2f} ms, "
        f"{infer[NN] / infer[FUSED]:.2f}x"
    )
    summary = Summary(losses, d_fused, d_env, metric_name, metrics, higher_is_better, step, infer)
    print(
        f"largest loss difference over the envelope's largest: "
        f"{summary.fused_diff / max(summary.envelope, 1e-30):.2f}; step by step, over the "
        f"envelope so far, at worst: {summary.worst_ratio:.2f}; lstm_fused's {metric_name} "
        f"beats {baseline_name}: {'yes' if summary.beats_baseline() else 'NO'}"
    )
    return summary


def plot(path: str, summary: Summary, title: str, extra: Optional[Callable] = None) -> None:
    """PNG: the loss curves (left), and `extra(ax)` (right) or the loss differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    steps = range(1, len(summary.losses[NN]) + 1)
    ax0.plot(steps, summary.losses[NN], label=NN, lw=2.5, alpha=0.6)
    ax0.plot(steps, summary.losses[FUSED], label="lstm_fused (replace_lstm)", lw=1, ls="--")
    ax0.set(xlabel="training step", ylabel="loss", yscale="log", title=title)
    ax0.legend()
    if extra is not None:
        extra(ax1)
    else:
        for diffs, style, label in (
            (summary.fused_diffs, "-", "lstm_fused vs nn.LSTM"),
            (summary.envelopes, ":", "envelope: nn.LSTM(+-1 ulp) vs nn.LSTM"),
        ):
            ax1.plot(steps, [d or float("nan") for d in diffs], ls=style, label=label)
        ax1.set(xlabel="training step", ylabel="|loss difference|", yscale="log")
        ax1.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


# ---- command line ------------------------------------------------------------------------------


def parser(description: str, epochs: int, dropout: float = 0.1) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--dropout",
        type=float,
        default=dropout,
        help=f"dropout between the LSTM layers (default {dropout})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"training epochs (default {epochs}, 1 with --smoke)",
    )
    p.set_defaults(full_epochs=epochs)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "cpu", "cuda", "triton", "reference"],
        help="lstm_fused backend of the fused side (default auto)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="a small run on a slice of the data (what the tests run)",
    )
    p.add_argument("--plot", metavar="PNG", help="write the loss curves (and more) to this PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on the CPU")
    return p


def setup(args) -> torch.device:
    """Threads, device, and the header line; --smoke without --epochs trains one epoch."""
    if args.epochs is None:
        args.epochs = 1 if args.smoke else args.full_epochs
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"torch {torch.__version__}, lstm_fused {lstm_fused.__version__}, backend "
        f"{args.backend!r}, {where}"
    )
    return device
