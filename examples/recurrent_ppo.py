"""A recurrent agent: sb3-contrib's RecurrentPPO on CartPole-v1, its LSTM run as one lstm_fused
call per batch of sequences, side by side with the stock policy.

sb3-contrib's RecurrentActorCriticPolicy._process_sequence runs nn.LSTM one step at a time in
a Python loop whenever a batch holds an episode start (it multiplies the carried state by
(1 - episode_start) before each step: a reset to zero). FusedLstmPolicy, a subclass, runs the
whole sequence batch as one lstm_fused.LSTM call with `resets` instead, and is exactly the
stock policy's math:

- at t = 0 it masks the initial state as the stock policy does, (1 - start[0]) * (h0, c0);
- a start at t > 0 is passed as resets[t]. lstm_fused restarts such a row from its initial
  state (h0, c0), the stock policy from zero: the same where that row's masked initial state
  is zero, which is always so in RecurrentPPO's training minibatches (sb3-contrib's sequencer,
  create_sequencers, cuts a sequence at every episode start, so a start can only be a
  sequence's first step) and during rollouts (T = 1). A call where a row would restart from a
  non-zero state runs the stock step loop instead (counted: `stock_fallbacks`).

Sides (all from one seed: same initial weights, same environments): "nn.LSTM" (the stock
MlpLstmPolicy), "lstm_fused" (FusedLstmPolicy) and "nn.LSTM+-1ulp" (the stock policy with
every parameter moved one float step at random at the start and after every update: how far
float32 rounding alone moves the run, examples/common.py's envelope). Training is chaotic:
once one sampled action differs the runs part, so the reward curves are compared as a whole,
against the envelope's.

    .venv/bin/python -m examples.recurrent_ppo            # 40 updates, a few minutes
    .venv/bin/python -m examples.recurrent_ppo --smoke    # 3 updates (the test)

Needs the packages of the `rl` extra (sb3-contrib, stable-baselines3, gymnasium).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

import lstm_fused
from examples.common import nudge

try:
    from sb3_contrib import RecurrentPPO
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
except ImportError as exc:  # the rl extra
    raise ImportError(
        f"examples.recurrent_ppo needs sb3-contrib, stable-baselines3 and "
        f"gymnasium (pip install -e '.[rl]'): {exc}"
    ) from exc

NN, FUSED, NUDGED = "nn.LSTM", "lstm_fused", "nn.LSTM+-1ulp"


class FusedLstmPolicy(RecurrentActorCriticPolicy):
    """RecurrentActorCriticPolicy whose LSTMs are lstm_fused.LSTM (the same Parameter objects,
    so the optimizer the parent built trains them) and whose sequence processing is one call
    with resets. policy_kwargs: the parent's, plus lstm_backend (lstm_fused's backend=)."""

    stock_fallbacks = 0  # calls that ran the stock step loop (see the module docstring)

    def __init__(self, *args, lstm_backend: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        lstm_fused.replace_lstm(self, backend=lstm_backend)

    @staticmethod
    def _process_sequence(features, lstm_states, episode_starts, lstm):
        """features (n_seq * T, F) sequence-major, lstm_states ((L, n_seq, H), (L, n_seq, H)),
        episode_starts (n_seq * T,) 0/1 -> (output (n_seq * T, H), (h_n, c_n))."""
        n_seq = lstm_states[0].shape[1]
        x = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1)  # (T, n_seq, F)
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)  # (T, n_seq)
        keep = (1.0 - starts[0]).view(1, n_seq, 1)  # the stock policy's reset at t = 0
        h0, c0 = keep * lstm_states[0], keep * lstm_states[1]
        resets = None
        if starts.shape[0] > 1:
            resets = starts != 0
            later = resets[1:].any(0)  # (n_seq,): a start after t = 0
            # One host read per call (the stock policy's own test, th.all(starts == 0), is one
            # too): does a row restart from a non-zero state, where the stock policy restarts
            # from zero?
            if bool((later & ((h0 != 0).any(2).any(0) | (c0 != 0).any(2).any(0))).any()):
                FusedLstmPolicy.stock_fallbacks += 1
                return RecurrentActorCriticPolicy._process_sequence(
                    features, lstm_states, episode_starts, lstm
                )
        out, states = lstm(x, (h0, c0), resets=resets)
        return torch.flatten(out.transpose(0, 1), start_dim=0, end_dim=1), states


class Recorder(BaseCallback):
    """Each finished episode's return (from the Monitor wrapper's info) and the number of
    environment steps taken when it finished."""

    def __init__(self):
        super().__init__()
        self.returns: List[float] = []
        self.steps: List[int] = []

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
                self.steps.append(self.num_timesteps)
        return True


class TimedRecurrentPPO(RecurrentPPO):
    """RecurrentPPO that times each update (train()) and rollout, and for an envelope side
    nudges its parameters one ulp after each update (and once at the start)."""

    def __init__(self, *args, nudge_seed: Optional[int] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_ms: List[float] = []
        self.rollout_ms: List[float] = []
        self.nudge_gen = None
        if nudge_seed is not None:
            self.nudge_gen = torch.Generator().manual_seed(nudge_seed)
            nudge(self.policy, self.nudge_gen)

    def train(self) -> None:
        start = time.perf_counter()
        super().train()
        self.train_ms.append((time.perf_counter() - start) * 1e3)
        if self.nudge_gen is not None:
            nudge(self.policy, self.nudge_gen)

    def collect_rollouts(self, *args, **kwargs):
        start = time.perf_counter()
        out = super().collect_rollouts(*args, **kwargs)
        self.rollout_ms.append((time.perf_counter() - start) * 1e3)
        return out


@dataclass
class Run:
    returns: List[float] = field(default_factory=list)  # every finished episode, in order
    steps: List[int] = field(default_factory=list)  # environment steps at each one's end
    train_ms: List[float] = field(default_factory=list)
    rollout_ms: List[float] = field(default_factory=list)
    model: Optional[TimedRecurrentPPO] = None

    def final_reward(self, last: int = 20) -> float:
        tail = self.returns[-last:]
        return statistics.fmean(tail) if tail else float("nan")


def config(smoke: bool) -> dict:
    """RecurrentPPO's settings: small LSTMs (64 units) and minibatches of 128 steps, 8
    environments; --smoke: 2 environments, 3 updates of 32 steps."""
    if smoke:
        return dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, updates=3, hidden=16)
    return dict(n_envs=8, n_steps=32, batch_size=128, n_epochs=4, updates=40, hidden=64)


def train_side(side: str, cfg: dict, seed: int, backend: str) -> Run:
    env = make_vec_env("CartPole-v1", n_envs=cfg["n_envs"], seed=seed)
    policy = FusedLstmPolicy if side == FUSED else "MlpLstmPolicy"
    kwargs = dict(lstm_hidden_size=cfg["hidden"], net_arch=[cfg["hidden"]])
    if side == FUSED:
        kwargs["lstm_backend"] = backend
    model = TimedRecurrentPPO(
        policy,
        env,
        n_steps=cfg["n_steps"],
        batch_size=cfg["batch_size"],
        n_epochs=cfg["n_epochs"],
        learning_rate=1e-3,
        seed=seed,
        policy_kwargs=kwargs,
        device="cpu",
        nudge_seed=seed + 1 if side == NUDGED else None,
    )
    recorder = Recorder()
    model.learn(total_timesteps=cfg["updates"] * cfg["n_steps"] * cfg["n_envs"], callback=recorder)
    return Run(recorder.returns, recorder.steps, model.train_ms, model.rollout_ms, model)


def interleaved_step_ms(runs: Dict[str, Run], reps: int) -> Dict[str, List[float]]:
    """One PPO gradient step's LSTM work, timed call by call in turn (nn.LSTM, lstm_fused,
    nn.LSTM, ...) on the same minibatch of the stock side's last rollout: evaluate_actions
    (both LSTMs over the minibatch's sequences), a loss, backward. Interleaved, so that a
    busy spell of a shared machine hits both alike."""
    stock = runs[NN].model
    batch = next(iter(stock.rollout_buffer.get(stock.batch_size)))
    actions = batch.actions.long().flatten()
    times: Dict[str, List[float]] = {NN: [], FUSED: []}
    for rep in range(reps + 2):  # two warm-up rounds
        for side in (NN, FUSED):
            policy = runs[side].model.policy
            policy.set_training_mode(True)
            start = time.perf_counter()
            values, log_prob, entropy = policy.evaluate_actions(
                batch.observations, actions, batch.lstm_states, batch.episode_starts
            )
            loss = values.square().mean() - log_prob.mean() - entropy.mean()
            policy.optimizer.zero_grad()
            loss.backward()
            if rep >= 2:
                times[side].append((time.perf_counter() - start) * 1e3)
    return times


def first_difference(a: List[float], b: List[float]) -> Optional[int]:
    """The index of the first episode whose return differs (None: none in the common part)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None


def moving_mean(values: List[float], window: int = 20) -> List[float]:
    return [statistics.fmean(values[max(0, i + 1 - window) : i + 1]) for i in range(len(values))]


def per_rollout(run: Run, rollout_steps: int, n_rollouts: int, window: int = 20) -> List[float]:
    """After each rollout, the mean return of the last `window` episodes ended so far (nan
    before the first)."""
    out = []
    for k in range(n_rollouts):
        done = [r for r, s in zip(run.returns, run.steps) if s <= (k + 1) * rollout_steps]
        out.append(statistics.fmean(done[-window:]) if done else float("nan"))
    return out


def report(runs: Dict[str, Run], cfg: dict, step_ms: Dict[str, List[float]]) -> None:
    rollout_steps = cfg["n_steps"] * cfg["n_envs"]
    curves = {side: per_rollout(run, rollout_steps, cfg["updates"]) for side, run in runs.items()}
    print("mean return of the last 20 episodes, after rollout:")
    print("rollout  " + "".join(f"{side:>16s}" for side in runs))
    for k in sorted({0, *range(4, cfg["updates"], 5), cfg["updates"] - 1}):
        print(f"{k + 1:7d}  " + "".join(f"{curves[side][k]:16.1f}" for side in runs))
    nn_run = runs[NN]
    for side, run in runs.items():
        diff = first_difference(nn_run.returns, run.returns) if side != NN else None
        where = (
            ""
            if side == NN
            else "  identical to nn.LSTM's episodes: all"
            if diff is None
            else f"  identical to nn.LSTM's first {diff} episodes"
        )
        print(
            f"{side:15s} episodes {len(run.returns):4d}  final reward (mean of last 20) "
            f"{run.final_reward():7.1f}  update {statistics.median(run.train_ms):8.1f} ms  "
            f"rollout {statistics.median(run.rollout_ms):7.1f} ms (medians){where}"
        )
    fused = runs[FUSED]
    print(
        f"update (train()) time, nn.LSTM / lstm_fused: "
        f"{statistics.median(nn_run.train_ms) / statistics.median(fused.train_ms):.2f}x; "
        f"rollout: "
        f"{statistics.median(nn_run.rollout_ms) / statistics.median(fused.rollout_ms):.2f}x; "
        f"stock step loop fallbacks: {FusedLstmPolicy.stock_fallbacks}"
    )
    q = {side: statistics.quantiles(v, n=5) if len(v) > 1 else v * 4 for side, v in step_ms.items()}
    print(
        f"one gradient step on a minibatch (evaluate_actions + backward), interleaved, "
        f"{len(step_ms[NN])} each: nn.LSTM {statistics.median(step_ms[NN]):.1f} ms "
        f"(p20-p80 {q[NN][0]:.1f}-{q[NN][3]:.1f}), lstm_fused "
        f"{statistics.median(step_ms[FUSED]):.1f} ms (p20-p80 {q[FUSED][0]:.1f}-"
        f"{q[FUSED][3]:.1f}): "
        f"{statistics.median(step_ms[NN]) / statistics.median(step_ms[FUSED]):.2f}x"
    )


def plot(path: str, runs: Dict[str, Run]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for side, run in runs.items():
        ax.plot(run.steps, moving_mean(run.returns), label=side, lw=1.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("return (moving mean of 20)")
    ax.set_title("RecurrentPPO on CartPole-v1: stock policy vs one lstm_fused call with resets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> Dict[str, Run]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="3 small updates (what the test runs)")
    p.add_argument("--updates", type=int, default=None, help="PPO updates (rollouts) per side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--backend", default="auto", help="lstm_fused backend (default auto)")
    p.add_argument("--plot", metavar="PNG", help="write the reward curves to this PNG")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = config(args.smoke)
    if args.updates is not None:
        cfg["updates"] = args.updates
    print(
        f"torch {torch.__version__}, lstm_fused {lstm_fused.__version__}, backend "
        f"{args.backend!r}, {torch.get_num_threads()} thread(s); RecurrentPPO {cfg}"
    )
    FusedLstmPolicy.stock_fallbacks = 0
    runs = {side: train_side(side, cfg, args.seed, args.backend) for side in (NN, FUSED, NUDGED)}
    step_ms = interleaved_step_ms(runs, reps=3 if args.smoke else 30)
    report(runs, cfg, step_ms)
    if args.plot:
        plot(args.plot, runs)
    return runs


if __name__ == "__main__":
    main(sys.argv[1:])
