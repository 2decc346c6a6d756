"""The benchmark cases: which op, which mode, which shape, which dtype, and the grids.

A case is (family, mode, shape, dtype). Families: lstm, lstm_cell, masked_softmax,
attention_pooling, self_attention, attentive_lstm, model_step, inference_onnx, overhead. Modes: "fwd"
(forward under no_grad), "fwd+bwd" (forward and backward), "train" (forward, loss, backward,
optimizer step).
Shape keys use the dimension letters of docs/contract.md: B batch, T time steps, I input size,
H hidden size, L layers, D directions (1 or 2) or the attended feature size, E embed dim,
N heads, A attention size; model_step adds V vocabulary and C classes. Grids: a --quick default (a few minutes on a 2-core CPU) and --full,
per device type; --headline, the LSTM at the shape of FlashRNN's published cuDNN comparison
alone (what tools/gpu_session.sh times); --smoke, tiny shapes of every family for the suite's
own tests. bench/interleaved.py draws its cases from these grids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Sequence, Tuple

FAMILIES = (
    "lstm",
    "lstm_cell",
    "masked_softmax",
    "attention_pooling",
    "self_attention",
    "attentive_lstm",
    "model_step",
    "inference_onnx",
    "overhead",
)


@dataclass(frozen=True)
class Case:
    family: str
    mode: str
    shape: Tuple[Tuple[str, int], ...]
    dtype: str  # "float32", "float64", "float16", "bfloat16"

    @property
    def dims(self) -> Dict[str, int]:
        return dict(self.shape)

    @property
    def shape_str(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.shape)

    @property
    def key(self) -> str:
        """What --filter matches: family/mode/shape/dtype."""
        return f"{self.family}/{self.mode}/{self.shape_str}/{self.dtype}"


def parse_shape(text: str) -> Dict[str, int]:
    """Inverse of Case.shape_str: 'B=32,T=100' -> {'B': 32, 'T': 100}."""
    out = {}
    for part in filter(None, text.split(",")):
        k, v = part.split("=")
        out[k.strip()] = int(v)
    return out


def grid(
    family: str,
    modes: Sequence[str],
    dtypes: Sequence[str],
    base: Dict[str, int],
    sweeps: Dict[str, Iterable[int]] = None,
) -> List[Case]:
    """The base shape, plus one variant per value of each swept key (others held at base)."""
    shapes = [dict(base)]
    for key, values in (sweeps or {}).items():
        for v in values:
            shapes.append({**base, key: v})
    cases, seen = [], set()
    for shape in shapes:
        frozen = tuple(shape.items())
        for dtype in dtypes:
            for mode in modes:
                c = Case(family, mode, frozen, dtype)
                if c not in seen:
                    seen.add(c)
                    cases.append(c)
    return cases


FB = ("fwd", "fwd+bwd")

# LSTM(256, 512, num_layers=2), B=32, T=100, float32: the LSTM case of every grid.
MAIN_LSTM = {"B": 32, "T": 100, "I": 256, "H": 512, "L": 2, "D": 1}
# Inference against onnxruntime (bench/workloads/inference_onnx.py): batch 32, and the
# deployment batches 1 and 8 (--full: 1, 2, 4, 8).
INFERENCE_SHAPE = {"B": 32, "T": 100, "I": 256, "H": 256, "L": 2, "D": 1}
INFERENCE = grid("inference_onnx", ("fwd",), ("float32",), INFERENCE_SHAPE, {"B": [1, 8]})
INFERENCE_FULL = grid(
    "inference_onnx", ("fwd",), ("float32",), INFERENCE_SHAPE, {"B": [1, 2, 4, 8]}
)
# Per-call overhead (bench/workloads/overhead.py): one step of the LSTM (T=1) and of the
# LSTMCell (no T), B 1 to 16, H 64 and 256, the state carried in.
OVERHEAD = grid(
    "overhead", FB, ("float32",), {"B": 4, "T": 1, "I": 64, "H": 64}, {"B": [1, 16], "H": [256]}
) + grid("overhead", FB, ("float32",), {"B": 4, "I": 64, "H": 64}, {"B": [1, 16], "H": [256]})

# The headline GPU shape: one LSTM layer, B=16, T=1024, I=H=768 (the shape of FlashRNN's
# published comparison with cuDNN), in bfloat16 and float16.
HEADLINE_LSTM = {"B": 16, "T": 1024, "I": 768, "H": 768, "L": 1, "D": 1}
HEADLINE_DTYPES = ("bfloat16", "float16")


def quick_cases(device_type: str) -> List[Case]:
    if device_type == "cuda":
        lowp = ("bfloat16",)
        return (
            grid("lstm", FB, ("float32",), MAIN_LSTM)
            + grid("lstm", FB, HEADLINE_DTYPES, HEADLINE_LSTM)
            + grid(
                "lstm",
                FB,
                lowp,
                {"B": 64, "T": 256, "I": 256, "H": 256, "L": 1, "D": 1},
                {"B": [8, 256], "H": [512, 1024]},
            )
            + grid("lstm", FB, lowp, {"B": 32, "T": 256, "I": 256, "H": 256, "L": 2, "D": 2})
            + grid("lstm_cell", FB, ("float32",) + lowp, {"B": 64, "I": 512, "H": 512})
            + grid("masked_softmax", FB, lowp, {"B": 32, "T": 512})
            + grid("attention_pooling", FB, lowp, {"B": 64, "T": 512, "D": 512, "A": 256})
            + grid("self_attention", FB, lowp, {"B": 32, "T": 512, "E": 512, "N": 8})
            # H=64, A=64 in bfloat16: small enough for Triton's one-launch pooled layer
            # (tuning.attentive_fits); the others run the layer, then the pooling
            + grid(
                "attentive_lstm",
                FB,
                ("float32",) + lowp,
                {"B": 64, "T": 256, "I": 128, "H": 128, "L": 1, "A": 64},
                {"H": [64]},
            )
            + grid(
                "model_step",
                ("train",),
                ("float32",) + lowp,
                {"B": 32, "T": 256, "V": 10000, "E": 256, "H": 256, "N": 8, "A": 128, "C": 10},
            )
            + INFERENCE
            + OVERHEAD
        )
    f32 = ("float32",)
    # A small LSTM first: its row comes within seconds (the large one's float64 reference and
    # nn.LSTM take a while on a busy machine).
    return (
        grid(
            "lstm",
            FB,
            f32,
            {"B": 16, "T": 50, "I": 128, "H": 128, "L": 1, "D": 1},
            {"B": [64], "H": [256]},
        )
        + grid("lstm", FB, f32, {"B": 16, "T": 50, "I": 128, "H": 128, "L": 1, "D": 2})
        + grid("lstm", FB, f32, MAIN_LSTM)
        + grid("lstm_cell", FB, f32, {"B": 32, "I": 256, "H": 512})
        + grid("masked_softmax", FB, f32, {"B": 32, "T": 100})
        + grid("attention_pooling", FB, f32, {"B": 32, "T": 100, "D": 256, "A": 128})
        + grid("self_attention", FB, f32, {"B": 32, "T": 100, "E": 256, "N": 4})
        + grid(
            "attentive_lstm",
            FB,
            f32,
            {"B": 32, "T": 100, "I": 256, "H": 512, "L": 2, "A": 128},
            {"B": [8], "H": [128]},
        )
        + grid(
            "model_step",
            ("train",),
            f32,
            {"B": 16, "T": 50, "V": 1000, "E": 128, "H": 128, "N": 4, "A": 64, "C": 5},
        )
        + INFERENCE
        + OVERHEAD
    )


def full_cases(device_type: str) -> List[Case]:
    if device_type == "cuda":
        dts = ("float32", "bfloat16", "float16")
        return (
            grid("lstm", FB, ("float32",), MAIN_LSTM)
            + grid(
                "lstm",
                FB,
                HEADLINE_DTYPES,
                HEADLINE_LSTM,
                {"B": [1, 8, 64, 256], "H": [256, 512, 1024]},
            )
            + grid(
                "lstm",
                FB,
                dts,
                {"B": 64, "T": 512, "I": 512, "H": 512, "L": 1, "D": 1},
                {"B": [1, 8, 16, 256], "H": [256, 1024], "L": [2, 4], "D": [2]},
            )
            + grid(
                "lstm_cell",
                FB,
                dts,
                {"B": 64, "I": 512, "H": 512},
                {"B": [1, 8, 256], "H": [256, 1024]},
            )
            + grid(
                "masked_softmax", FB, dts, {"B": 32, "T": 512}, {"B": [8, 128], "T": [128, 2048]}
            )
            + grid(
                "attention_pooling",
                FB,
                dts,
                {"B": 64, "T": 512, "D": 512, "A": 256},
                {"B": [8, 256], "T": [128, 2048]},
            )
            + grid(
                "self_attention",
                FB,
                dts,
                {"B": 32, "T": 512, "E": 512, "N": 8},
                {"B": [8, 128], "T": [128, 2048]},
            )
            + grid(
                "attentive_lstm",
                FB,
                dts,
                {"B": 64, "T": 256, "I": 128, "H": 128, "L": 1, "A": 64},
                {"B": [8, 256], "T": [1024], "H": [64, 512], "L": [2]},
            )
            + grid(
                "model_step",
                ("train",),
                dts,
                {"B": 32, "T": 256, "V": 10000, "E": 256, "H": 256, "N": 8, "A": 128, "C": 10},
                {"B": [8, 128], "H": [128, 512]},
            )
            + INFERENCE
            + OVERHEAD
        )
    f32 = ("float32",)
    return (
        grid("lstm", FB, f32, MAIN_LSTM)
        + grid(
            "lstm",
            FB,
            f32,
            {"B": 32, "T": 100, "I": 256, "H": 256, "L": 1, "D": 1},
            {"B": [1, 8, 64, 128], "H": [64, 128, 512, 1024], "L": [2, 4], "D": [2]},
        )
        + grid(
            "lstm_cell",
            FB,
            f32,
            {"B": 32, "I": 256, "H": 512},
            {"B": [1, 8, 128], "H": [128, 1024]},
        )
        + grid("masked_softmax", FB, f32, {"B": 32, "T": 100}, {"B": [8, 128], "T": [50, 400]})
        + grid(
            "attention_pooling",
            FB,
            f32,
            {"B": 32, "T": 100, "D": 256, "A": 128},
            {"B": [8, 128], "T": [50, 400]},
        )
        + grid(
            "self_attention",
            FB,
            f32,
            {"B": 32, "T": 100, "E": 256, "N": 4},
            {"B": [8, 128], "T": [50, 400]},
        )
        + grid(
            "attentive_lstm",
            FB,
            f32,
            {"B": 32, "T": 100, "I": 256, "H": 512, "L": 2, "A": 128},
            {"B": [8, 64], "H": [128, 256], "T": [400]},
        )
        + grid(
            "model_step",
            ("train",),
            f32,
            {"B": 16, "T": 50, "V": 1000, "E": 128, "H": 128, "N": 4, "A": 64, "C": 5},
            {"B": [4, 64], "H": [64, 256]},
        )
        + INFERENCE_FULL
        + OVERHEAD
    )


def smoke_cases(device_type: str) -> List[Case]:
    """Tiny shapes of every family, for the suite's own tests (seconds, not minutes)."""
    f32 = ("float32",)
    return (
        grid(
            "lstm", FB, f32, {"B": 2, "T": 5, "I": 6, "H": 8, "L": 2, "D": 1}, {"B": [4], "H": [12]}
        )
        + grid("lstm", FB, f32, {"B": 3, "T": 4, "I": 5, "H": 6, "L": 1, "D": 2})
        + grid("lstm_cell", FB, f32, {"B": 3, "I": 5, "H": 7})
        + grid("masked_softmax", FB, f32, {"B": 3, "T": 6})
        + grid("attention_pooling", FB, f32, {"B": 3, "T": 6, "D": 8, "A": 4})
        + grid("self_attention", FB, f32, {"B": 3, "T": 6, "E": 8, "N": 2})
        + grid("attentive_lstm", FB, f32, {"B": 3, "T": 6, "I": 5, "H": 8, "L": 2, "A": 4})
        + grid(
            "model_step",
            ("train",),
            f32,
            {"B": 3, "T": 6, "V": 20, "E": 8, "H": 8, "N": 2, "A": 4, "C": 3},
        )
        + grid("inference_onnx", ("fwd",), f32, {"B": 2, "T": 5, "I": 6, "H": 8, "L": 2, "D": 1})
        + grid("overhead", FB, f32, {"B": 2, "T": 1, "I": 5, "H": 6})
        + grid("overhead", FB, f32, {"B": 2, "I": 5, "H": 6})
    )


def headline_cases(device_type: str) -> List[Case]:
    """The headline LSTM shape alone, forward and forward+backward: bfloat16 and float16 on
    the GPU, float32 on the CPU (where half precision is not what anyone runs)."""
    return grid(
        "lstm", FB, HEADLINE_DTYPES if device_type == "cuda" else ("float32",), HEADLINE_LSTM
    )


# The grids cover every family; "headline" is one focused case family.
GRIDS = {"quick": quick_cases, "full": full_cases, "smoke": smoke_cases}
PRESETS = {**GRIDS, "headline": headline_cases}


def select(cases: List[Case], pattern: str = None) -> List[Case]:
    """Cases whose key (family/mode/shape/dtype) matches the regular expression `pattern`."""
    if not pattern:
        return list(cases)
    rx = re.compile(pattern)
    return [c for c in cases if rx.search(c.key)]
