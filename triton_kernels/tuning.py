"""Block sizes, warps and the choice of path, by a fixed rule keyed on B, H (R) and dtype.

A rule rather than triton.autotune: the sequence kernel runs a whole layer in one launch, so
timing candidates would run the layer several times on the first call, and the state it
writes (y, gates, cells) would need restoring between candidates. The rule is small enough to
read in full below; its constants are NOT tuned on a GPU yet (no GPU was available when it
was written) and are the first thing to measure.

Also here: `new_output`, which allocates every kernel output, and the library's two settings,
which it reads from nowhere else (lstm_fused hands it its switches through `configure`):
poisoning (outputs filled with NaN first, so that a test catches any element a kernel forgets)
and a forced path.
"""

import contextlib
from typing import Optional

import torch
import triton

from .launch_config import shared_memory_limit

# Set through configure(), poison_outputs() or force_path(): outputs are NaN before the
# kernels run; the path every layer call takes (None = the rule of choose_path).
_POISON = False
_FORCED_PATH = None
PATHS = ("sequence", "step")


def configure(poison: Optional[bool] = None, path: Optional[str] = "keep") -> None:
    """Set the library's settings: poison (bool), path (one of PATHS, or None for the rule);
    an argument left out keeps its setting."""
    global _POISON, _FORCED_PATH
    if poison is not None:
        _POISON = bool(poison)
    if path != "keep":
        if path not in (None,) + PATHS:
            raise ValueError(f"path must be one of {', '.join(PATHS)} or None, got {path!r}")
        _FORCED_PATH = path


# The sequence kernel keeps W_hh (4 tiles of BLOCK_R x BLOCK_H) and W_hr (BLOCK_H x BLOCK_R)
# of one direction on chip for the whole time loop, in one program per (direction, batch
# block); the compiler stages the tiles in shared memory, so what fits depends on the GPU
# (launch_config.SHARED_MEMORY_LIMIT). The largest weight (elements: 4 BLOCK_R BLOCK_H, plus
# BLOCK_H BLOCK_R with a projection, plus BLOCK_A BLOCK_R when pooling), per element size, whose
# kernels compile within the target's shared memory and without register spills, as measured
# by tests/test_triton_aot.py (which compiles these boundary sizes and fails if one stops
# fitting). Targets are keyed by the smallest limit they stand for: a GPU gets the row of the
# largest limit its own covers; a GPU below sm_80's 163 KiB takes the step path throughout.
SEQUENCE_MAX_WEIGHT_ELEMENTS = {
    # 16-bit H = R = 128: the forward spills on sm_90 (4 to 32 bytes, 8 or 16 warps) though not
    # on sm_80; H = 128 with a projection to P <= 64 is admitted.
    90: {2: 128 * 64 * 4 + 128 * 64, 4: 64 * 64 * 4, 8: 32 * 32 * 4},
    # float32 H = R = 64: the backward needs 196,608 bytes (sm_80 has 166,912); H = 64 with a
    # projection to P = 32 fits.
    80: {2: 128 * 128 * 4, 4: 64 * 32 * 4 + 64 * 32, 8: 32 * 32 * 4},
}
# Largest BLOCK_H per element size, on every target: wider gate tiles (BLOCK_B x BLOCK_H per
# gate, in registers) spill, e.g. float32 at BLOCK_H = 128 with a projection to R = 16 (7 KB
# of spill stores on sm_80) although its weights are few. And the largest pooling tile BLOCK_A
# of the attentive LSTM's fused layer.
SEQUENCE_MAX_BLOCK_H = {2: 128, 4: 64, 8: 32}
SEQUENCE_MAX_BLOCK_A = {2: 128, 4: 128, 8: 64}  # float64 A = 128 spills (sm_80)
# tl.dot needs every block dimension >= 16.
MIN_DOT_BLOCK = 16


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the kernels: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def new_output(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    """An uninitialised output, or NaN everywhere when poisoning is on."""
    dtype = like.dtype if dtype is None else dtype
    if _POISON:
        return torch.full(shape, float("nan"), dtype=dtype, device=like.device)
    return torch.empty(shape, dtype=dtype, device=like.device)


@contextlib.contextmanager
def poison_outputs(enabled: bool = True):
    """Within the block, kernel outputs are filled with NaN before the kernels run."""
    global _POISON
    old, _POISON = _POISON, enabled
    try:
        yield
    finally:
        _POISON = old


@contextlib.contextmanager
def force_path(path):
    """Within the block, every layer call takes `path` (one of PATHS; None = rule)."""
    global _FORCED_PATH
    if path not in (None,) + PATHS:
        raise ValueError(
            f"force_path: path must be one of {', '.join(PATHS)} or None, got {path!r}"
        )
    old, _FORCED_PATH = _FORCED_PATH, path
    try:
        yield
    finally:
        _FORCED_PATH = old


def dot_block(n: int) -> int:
    return max(MIN_DOT_BLOCK, triton.next_power_of_2(max(n, 1)))


def sequence_weight_cap(dtype: torch.dtype, target: Optional[int]) -> int:
    """The most weight elements the sequence kernel keeps on chip on `target` (None: the
    interpreter, which has no shared memory; it gets the largest of the rows, so that tests
    see every size some GPU runs); 0 where no row of SEQUENCE_MAX_WEIGHT_ELEMENTS covers the
    GPU."""
    size = torch.tensor([], dtype=dtype).element_size()
    if target is None:
        return max(row[size] for row in SEQUENCE_MAX_WEIGHT_ELEMENTS.values())
    limit = shared_memory_limit(target)
    rows = [t for t in SEQUENCE_MAX_WEIGHT_ELEMENTS if shared_memory_limit(t) <= limit]
    if not rows:
        return 0
    return SEQUENCE_MAX_WEIGHT_ELEMENTS[max(rows, key=shared_memory_limit)][size]


def sequence_weight_elements(H: int, R: int, proj: bool, A: int = 0) -> int:
    """Elements of the weight tiles the sequence kernel keeps on chip (A > 0: pooling too)."""
    bh, br = dot_block(H), dot_block(R)
    return 4 * br * bh + (bh * br if proj else 0) + (dot_block(A) * br if A else 0)


def sequence_fits(
    H: int, R: int, proj: bool, dtype: torch.dtype, target: Optional[int] = None
) -> bool:
    """Whether the recurrent weights of one direction fit on chip for the sequence kernel
    on `target` (launch_config.py)."""
    size = torch.tensor([], dtype=dtype).element_size()
    return dot_block(H) <= SEQUENCE_MAX_BLOCK_H[size] and sequence_weight_elements(
        H, R, proj
    ) <= sequence_weight_cap(dtype, target)


def attentive_fits(
    H: int, R: int, A: int, proj: bool, dtype: torch.dtype, target: Optional[int] = None
) -> bool:
    """Whether the sequence kernel can also keep the pooling weight W_h (A, R) on chip, for
    the attentive LSTM's pooled last layer (lstm_sequence.sequence_attentive_forward)."""
    size = torch.tensor([], dtype=dtype).element_size()
    return (
        sequence_fits(H, R, proj, dtype, target)
        and dot_block(A) <= SEQUENCE_MAX_BLOCK_A[size]
        and sequence_weight_elements(H, R, proj, A) <= sequence_weight_cap(dtype, target)
    )


def choose_path(
    T: int, H: int, R: int, proj: bool, dtype: torch.dtype, target: Optional[int] = None
) -> str:
    """ "sequence" (one launch for the whole layer) or "step" (a gate launch per step).

    T == 1 (LSTMCell, or a one-step layer) takes the step path: there is no recurrence to keep
    on chip and the one GEMM is cuBLAS's. Layers whose weights do not fit (sequence_fits) take
    the step path too."""
    if _FORCED_PATH is not None:
        return _FORCED_PATH
    if T > 1 and sequence_fits(H, R, proj, dtype, target):
        return "sequence"
    return "step"


def gate_config(B: int, H: int, dtype: torch.dtype):
    """(BLOCK_B, BLOCK_H, num_warps) of the element-wise gate kernels: 2048 elements of each of
    the 4 gates per program (1024 in float64, whose values take two registers each: 2048
    spilled), wider H blocks first (coalesced rows). B does not enter: the kernels are
    memory-bound and a narrow batch only masks rows, while every distinct tile would be a
    kernel compiled of its own."""
    elements = 1024 if dtype == torch.float64 else 2048
    block_h = min(triton.next_power_of_2(max(H, 1)), 256 if dtype != torch.float64 else 128)
    block_b = max(1, elements // block_h)
    return block_b, block_h, 4


def sequence_config(B: int, H: int, R: int, dtype: torch.dtype, target: Optional[int] = None):
    """(BLOCK_B, BLOCK_H, BLOCK_R, num_warps, num_stages) of the sequence kernels on `target`.

    BLOCK_B is the M of the per-step tl.dot: 16, the smallest tl.dot tile, so that B/16
    programs per direction spread over the SMs (a larger block would also raise the shared
    memory measured in SEQUENCE_MAX_WEIGHT_ELEMENTS). 8 warps when the weight tiles are
    large, 4 when they are small. Not tuned on a GPU yet: B only sets the grid here."""
    block_b = 16
    bh, br = dot_block(H), dot_block(R)
    # 16-bit H = R = 64 with 8 warps: ptxas keeps 128 registers and spills (sm_80); 4 do not.
    wide = 4 * bh * br > (16384 if dtype in (torch.float16, torch.bfloat16) else 4096)
    num_warps = 8 if wide else 4
    return block_b, bh, br, num_warps, 3
