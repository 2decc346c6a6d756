"""Distributed data-parallel training with lstm_fused modules, on the CPU with gloo.

Two processes (torch.multiprocessing spawn, rendezvous on 127.0.0.1) each train on their half of
a batch; after STEPS steps of SGD their parameters must equal one process trained on the whole
batch. Run in the same two workers (one spawn, to pay the start-up of two Python processes
once):

- DDP (DistributedDataParallel, gloo), float32 and float64;
- FSDP2 (torch.distributed.fsdp.fully_shard) on a CPU device mesh, float32;
- DDP under torch.compile (backend "aot_eager"), float32.

Why the tolerances: each rank's loss is the mean over its B/2 rows, and the gradients are
averaged over the 2 ranks, which is the whole-batch mean in exact arithmetic, but the sums are
rounded in another order. The float64 runs must therefore agree to float64 rounding (1e-12);
the float32 runs to float32 rounding, measured here as the difference between the same
single-process training in float32 and in float64 (the `envelope`): two float32 computations of
the same steps differ from each other by at most about twice what either differs from the
exact result, so the test allows 4 x envelope.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import lstm_fused

WORLD = 2
B, T, I, H, A, C = 8, 7, 5, 6, 4, 3  # batch, steps, input, hidden, attention, classes
STEPS, LR, CLIP = 5, 1.0, 0.25
# "inductor" passes too, but building its C++ took these runs from 24 s to 52 s here (once each).
COMPILE_BACKEND = "aot_eager"


class Tagger(nn.Module):
    """(B, T, I) padded sequences + lengths (B,) -> logits (B, C): a 2-layer bidirectional
    lstm_fused.LSTM, additive attention pooling over its outputs, a linear classifier."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_fused.LSTM(I, H, num_layers=2, batch_first=True, bidirectional=True)
        self.pool = lstm_fused.AttentionPooling(2 * H, A, batch_first=True)
        self.head = nn.Linear(2 * H, C)

    def forward(self, x, lengths):
        y, _ = self.lstm(x)
        context, _alpha = self.pool(y, lengths)
        return self.head(context)


def make_model(dtype):
    torch.manual_seed(0)
    return Tagger().to(dtype)


def make_data(dtype):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, B, T, I, generator=gen, dtype=torch.float64).to(dtype)
    lengths = torch.randint(1, T + 1, (STEPS, B), generator=gen)
    labels = torch.randint(0, C, (STEPS, B), generator=gen)
    return x, lengths, labels


def train(model, params, x, lengths, labels, rows):
    """STEPS steps of SGD on the rows `rows` of each step's batch, the gradient norm clipped to
    CLIP (the norms are 0.29 to 0.44 at the initial weights: the clipping acts); returns the
    losses."""
    params = list(params)
    opt = torch.optim.SGD(params, lr=LR)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        logits = model(x[step, rows], lengths[step, rows])
        loss = F.cross_entropy(logits, labels[step, rows])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        losses.append(loss.detach())
    return losses


def single_process(dtype):
    model = make_model(dtype)
    train(model, model.parameters(), *make_data(dtype), rows=slice(None))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------- the workers


def _run_ddp(dtype, rows, compiled=False):
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model(dtype)
    ddp = DDP(model)
    net = ddp
    if compiled:
        torch._dynamo.reset()
        net = torch.compile(ddp, backend=COMPILE_BACKEND)
    train(net, ddp.parameters(), *make_data(dtype), rows=rows)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    if compiled:  # proof that dynamo did compile graphs rather than run eager
        params["graphs compiled"] = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    return params


def _run_fsdp2(dtype, rows):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model(dtype)
    mesh = init_device_mesh("cpu", (WORLD,))
    fully_shard(model.lstm, mesh=mesh)
    fully_shard(model, mesh=mesh)
    train(model, model.parameters(), *make_data(dtype), rows=rows)
    # Sharded DTensor parameters -> whole tensors (a collective: every rank calls it).
    return {n: p.detach().full_tensor().clone() for n, p in model.named_parameters()}


def _has_fsdp2():
    """FSDP2 is torch.distributed.fsdp.fully_shard (torch >= 2.6); it runs on a CPU mesh with
    gloo in torch 2.13 (measured: this file's test passes there)."""
    import torch.distributed.fsdp as fsdp

    return hasattr(fsdp, "fully_shard")


RUNS = {
    "ddp_float32": lambda rows: _run_ddp(torch.float32, rows),
    "ddp_float64": lambda rows: _run_ddp(torch.float64, rows),
    "ddp_compile_float32": lambda rows: _run_ddp(torch.float32, rows, compiled=True),
}
if _has_fsdp2():
    RUNS["fsdp2_float32"] = lambda rows: _run_fsdp2(torch.float32, rows)


def _worker(rank, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        half = B // WORLD
        rows = slice(rank * half, (rank + 1) * half)
        results = {}
        for name, run in RUNS.items():
            try:
                results[name] = run(rows)
            except Exception as e:  # reported to the test, which fails or skips on it
                results[name] = f"{type(e).__name__}: {e}"
            dist.barrier()
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available in this build")
    out = tmp_path_factory.mktemp("dist") / "results.pt"
    # The spawned workers import this file by its module name: pytest put its folder on
    # sys.path, which spawn passes on to the children.
    assert os.path.dirname(__file__) in sys.path
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def reference():
    single32 = single_process(torch.float32)
    single64 = single_process(torch.float64)
    envelope = max((single32[n].double() - single64[n]).abs().max().item() for n in single64)
    return single32, single64, envelope


def _max_diff(a, b):
    a = {n: p for n, p in a.items() if n != "graphs compiled"}
    assert a.keys() == b.keys()
    return max((a[n].double() - b[n].double()).abs().max().item() for n in a)


def _result(results, name):
    r = results[name]
    if isinstance(r, str):
        pytest.fail(f"{name} failed in the workers: {r}")
    return r


def test_ddp_float64_equals_single_process(distributed_results, reference):
    _single32, single64, _ = reference
    diff = _max_diff(_result(distributed_results, "ddp_float64"), single64)
    assert diff < 1e-12, diff


def test_ddp_float32_equals_single_process(distributed_results, reference):
    single32, single64, envelope = reference
    assert 0 < envelope < 1e-4, envelope  # the steps did move weights in float32 rounding
    # and the training did change the weights by much more than that:
    initial = dict(make_model(torch.float64).named_parameters())
    assert _max_diff(single64, initial) > 1e-2
    diff = _max_diff(_result(distributed_results, "ddp_float32"), single32)
    assert diff <= 4 * envelope, (diff, envelope)


def test_fsdp2_equals_single_process(distributed_results, reference):
    if not _has_fsdp2():
        pytest.skip(f"torch {torch.__version__} has no FSDP2 (torch.distributed.fsdp.fully_shard)")
    single32, _, envelope = reference
    diff = _max_diff(_result(distributed_results, "fsdp2_float32"), single32)
    assert diff <= 4 * envelope, (diff, envelope)


def test_ddp_compiled_equals_single_process(distributed_results, reference):
    single32, _, envelope = reference
    result = _result(distributed_results, "ddp_compile_float32")
    assert result["graphs compiled"] >= 1
    diff = _max_diff(result, single32)
    assert diff <= 4 * envelope, (diff, envelope)
