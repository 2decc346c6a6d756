"""Small calls of every kernel family, forward and backward, for compute-sanitizer.

    compute-sanitizer --tool memcheck python3 tools/gpu_sanitize.py            # on a GPU
    compute-sanitizer --tool racecheck python3 tools/gpu_sanitize.py --dtypes float32
    python tools/gpu_sanitize.py --dry                                         # CPU, no tool

Families: the LSTM layer (both directions, projection, lengths with a 0 and a full one; and on
"cuda" also the layer without projection, which the tensor-core loop takes in 16-bit), LSTMCell, masked softmax, attention pooling
(with a query), self-attention (training, attention dropout 0.1), channel attention (ECA and
SE) and the attentive LSTM (training, and inference, where the pooling runs inside the time
loop). Each call is built for one backend on fresh random inputs and differentiated once on
its own graph (never a second backward through a graph). Its outputs and gradients are
compared with the "reference" backend in float64 on the same device, same parameters, inputs
and seed (so self-attention draws the same dropout mask).

A call the backend refuses (its backend choice names the reason) is reported and not counted
as a failure; any other error, a non-finite value or a wrong answer is. Exit status: 0 when
every call that ran passed and at least one ran per backend, 1 otherwise. --dry runs the same
calls on the CPU (backends "cpu", and "triton" only under TRITON_INTERPRET=1): it checks this
script, not the GPU kernels.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # lstm_fused from this checkout

import torch  # noqa: E402

import lstm_fused  # noqa: E402
from lstm_fused import functional, switches  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# max |got - want| / max |want| per tensor: float32 allows TF32 matrix products on the GPU.
TOLERANCE = {
    "cuda": {torch.float32: 1e-2, torch.bfloat16: 6e-2, torch.float16: 2e-2},
    "cpu": {torch.float32: 1e-4, torch.bfloat16: 6e-2, torch.float16: 2e-2},
}
T, B = 7, 3
LENGTHS = [7, 3, 0]  # a full row, a short one and an empty one


class Refused(Exception):
    """The backend's choice refuses this call (the reason is the message)."""


# --------------------------------------------------------------------------- the calls
# Each builder takes (backend, dtype, device, gen) and returns (module or None, inputs dict,
# forward: inputs -> tuple of output tensors). Parameters are made in float64 from `gen` so
# the reference gets the very same ones.


def _randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def _lengths(device):
    return torch.tensor(LENGTHS, device=device)


def lstm_layer(no_proj: bool):
    def build(backend, dtype, device, gen):
        D, I, H, P = 2, 5, 8, 6
        if no_proj:  # no projection: the tensor-core loop's shapes (16-bit dtypes)
            P = H
        params = {
            "w_ih": _randn(gen, D, 4 * H, I) * 0.3,
            "w_hh": _randn(gen, D, 4 * H, P) * 0.3,
            "bias": _randn(gen, D, 4 * H) * 0.1,
        }
        if not no_proj:
            params["w_hr"] = _randn(gen, D, P, H) * 0.3
        inputs = {
            "x": _randn(gen, T, B, I),
            "h0": _randn(gen, D, B, P) * 0.5,
            "c0": _randn(gen, D, B, H) * 0.5,
            **params,
        }
        lengths = _lengths(device)

        def forward(t):
            return functional.lstm_layer(
                t["x"],
                t["h0"],
                t["c0"],
                t["w_ih"],
                t["w_hh"],
                t["bias"],
                t.get("w_hr"),
                None,
                lengths,
                backend=backend,
            )

        return None, inputs, forward

    return build


def lstm_cell(backend, dtype, device, gen):
    cell = lstm_fused.LSTMCell(5, 9, backend=backend, dtype=torch.float64)
    inputs = {"x": _randn(gen, B, 5), "h": _randn(gen, B, 9) * 0.5, "c": _randn(gen, B, 9) * 0.5}
    return cell, inputs, lambda t: cell(t["x"], (t["h"], t["c"]))


def masked_softmax(backend, dtype, device, gen):
    lengths = _lengths(device)
    return (
        None,
        {"scores": _randn(gen, B, T, T)},
        lambda t: (functional.masked_softmax(t["scores"], lengths, scale=0.7, backend=backend),),
    )


def attention_pooling(backend, dtype, device, gen):
    pool = lstm_fused.AttentionPooling(12, 6, query_size=4, backend=backend, dtype=torch.float64)
    lengths = _lengths(device)
    return (
        pool,
        {"x": _randn(gen, T, B, 12), "q": _randn(gen, B, 4)},
        lambda t: pool(t["x"], lengths, t["q"]),
    )


def self_attention(backend, dtype, device, gen):
    mhsa = lstm_fused.MultiheadSelfAttention(
        16, 2, dropout=0.1, backend=backend, dtype=torch.float64
    ).train()
    lengths = _lengths(device)

    def forward(t):
        torch.manual_seed(1234)  # the same dropout mask for the backend and the reference
        return (mhsa(t["x"], lengths)[0],)

    return mhsa, {"x": _randn(gen, T, B, 16)}, forward


def channel_attention(mode):
    def build(backend, dtype, device, gen):
        gate = lstm_fused.ChannelAttention(32, mode=mode, backend=backend, dtype=torch.float64)
        lengths = _lengths(device)
        return gate, {"x": _randn(gen, T, B, 32)}, lambda t: (gate(t["x"], lengths),)

    return build


def attentive_lstm(inference: bool):
    def build(backend, dtype, device, gen):
        model = lstm_fused.AttentiveLSTM(
            5, 8, 6, num_layers=2, backend=backend, dtype=torch.float64
        )
        lengths = _lengths(device)

        def forward(t):
            context, alpha, (h_n, c_n) = model(t["x"], lengths)
            return context, alpha, h_n, c_n

        return model, {"x": _randn(gen, T, B, 5)}, forward

    return build


# (name, builder, differentiate, backends it applies to (None: all), switches for the call)
CALLS = [
    ("lstm_layer[bidir,proj,lengths]", lstm_layer(False), True, None, {}),
    ("lstm_layer[no-proj,bidir,lengths]", lstm_layer(True), True, ("cuda",), {}),
    ("lstm_cell", lstm_cell, True, None, {}),
    ("masked_softmax", masked_softmax, True, None, {}),
    ("attention_pooling[query,lengths]", attention_pooling, True, None, {}),
    ("self_attention[dropout=0.1,lengths]", self_attention, True, None, {}),
    ("channel_attention[eca]", channel_attention("eca"), True, None, {}),
    ("channel_attention[se]", channel_attention("se"), True, None, {}),
    ("attentive_lstm[train]", attentive_lstm(False), True, None, {}),
    ("attentive_lstm[inference]", attentive_lstm(True), False, None, {}),
]


# --------------------------------------------------------------------------- running one


def evaluate(builder, backend, dtype, device, seed, differentiate):
    """(names, tensors): the outputs and, when differentiated, the gradients of every input and
    parameter for one fixed random output gradient, from one forward and one backward."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # modules initialise their parameters from the global generator
    module, inputs, forward = builder(backend, dtype, device, gen)
    if module is not None:
        module.to(device=device, dtype=dtype)
    t = {
        k: v.to(device=device, dtype=dtype).requires_grad_(differentiate) for k, v in inputs.items()
    }
    params = [] if module is None else list(module.named_parameters())
    with torch.set_grad_enabled(differentiate):
        outs = forward(t)
    names = [f"output {k}" for k in range(len(outs))]
    tensors = [o.detach() for o in outs]
    if differentiate:
        targets = list(t.items()) + params
        grad_gen = torch.Generator().manual_seed(seed + 1)
        pairs = [
            (
                o,
                torch.randn(o.shape, generator=grad_gen, dtype=torch.float64).to(
                    device=device, dtype=o.dtype
                ),
            )
            for o in outs
            if o.requires_grad
        ]
        grads = torch.autograd.grad(
            [o for o, _ in pairs], [v for _, v in targets], [g for _, g in pairs], allow_unused=True
        )
        for (name, v), g in zip(targets, grads):
            names.append(f"grad {name}")
            tensors.append(torch.zeros_like(v) if g is None else g)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # a kernel fault surfaces here, in this call
    return names, tensors


def worst_error(got: List[torch.Tensor], want: List[torch.Tensor], names) -> Tuple[float, str]:
    worst, where = 0.0, ""
    for name, g, w in zip(names, got, want):
        g, w = g.double().cpu(), w.double().cpu()
        if g.shape != w.shape:
            return math.inf, f"{name}: shape {tuple(g.shape)}, expected {tuple(w.shape)}"
        if not torch.isfinite(g).all():
            return math.inf, f"{name}: non-finite values"
        if g.numel() == 0:
            continue
        e = (g - w).abs().max().item() / max(w.abs().max().item(), 1e-6)
        if e > worst:
            worst, where = e, name
    return worst, where


def run_call(name, builder, differentiate, env, backend, dtype, device, seed) -> Tuple[str, str]:
    """(status, detail): status "ok", "refused" or "FAIL"."""
    reason = _refusal(builder, backend, dtype, device)
    if reason:
        return "refused", reason
    with switches.override(**env):
        try:
            names, got = evaluate(builder, backend, dtype, device, seed, differentiate)
        except RuntimeError as exc:
            if "cannot run this" in str(exc):
                return "refused", str(exc).splitlines()[0][:300]
            return "FAIL", f"{type(exc).__name__}: {str(exc)[:600]}"
    _, want = evaluate(builder, "reference", torch.float64, device, seed, differentiate)
    err, where = worst_error(got, want, names)
    tol = TOLERANCE[device.type][dtype]
    if not err <= tol:
        return "FAIL", f"max normalised error {err:.3g} in {where} (tolerance {tol:g})"
    return "ok", f"max normalised error {err:.2g}"


def _refusal(builder, backend, dtype, device) -> Optional[str]:
    """Why the backend cannot run on this device and dtype at all (None: it may)."""
    names = lstm_fused.available_backends()
    if backend not in names:
        return f"backend {backend!r} is not available here (available: {names})"
    if backend == "triton" and device.type == "cpu" and not switches.enabled("triton_interpret"):
        return "Triton runs on the CPU only under TRITON_INTERPRET=1"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="tools/gpu_sanitize.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dry",
        action="store_true",
        help="on the CPU (backends cpu, and triton under TRITON_INTERPRET=1)",
    )
    p.add_argument("--backends", default=None, help="comma-separated (default cuda,triton)")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated")
    p.add_argument("--only", default=None, help="substring of the call names to run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.dry:
        device = torch.device("cpu")
        default = "cpu,triton" if switches.enabled("triton_interpret") else "cpu"
        dtypes = ["float32"]
    else:
        if not torch.cuda.is_available():
            print("no GPU: torch.cuda.is_available() is False (use --dry for the CPU run)")
            return 1
        device = torch.device("cuda")
        default = "cuda,triton"
        dtypes = args.dtypes.split(",")
    backends = (args.backends or default).split(",")
    print(
        f"gpu_sanitize: device {device} "
        f"({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), torch "
        f"{torch.__version__}, backends {backends}, dtypes {dtypes}, available "
        f"{lstm_fused.available_backends()}",
        flush=True,
    )
    counts = {b: {"ok": 0, "refused": 0, "FAIL": 0} for b in backends}
    start = time.perf_counter()
    # dtype by dtype, so that a run stopped by its timeout has checked every backend in the
    # first dtype; each call of each backend on its own graph
    for dtype_name in dtypes:
        for backend in backends:
            for k, (name, builder, differentiate, only, env) in enumerate(CALLS):
                if only is not None and backend not in only:
                    continue
                if args.only and args.only not in name:
                    continue
                t0 = time.perf_counter()
                status, detail = run_call(
                    name,
                    builder,
                    differentiate,
                    env,
                    backend,
                    DTYPES[dtype_name],
                    device,
                    args.seed + 10 * k,
                )
                counts[backend][status] += 1
                print(
                    f"{status:>7}  {backend:<7} {dtype_name:<9} {name:<38} "
                    f"{time.perf_counter() - t0:6.1f} s  {detail}",
                    flush=True,
                )
    failed = False
    for backend, c in counts.items():
        print(f"summary {backend}: {c['ok']} ok, {c['refused']} refused, {c['FAIL']} failed")
        failed |= c["FAIL"] > 0 or c["ok"] == 0
    print(
        f"gpu_sanitize: {'FAILED' if failed else 'passed'} in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
