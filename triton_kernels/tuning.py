"""Block sizes, warps and the choice of path, by a fixed rule keyed on B, H (R) and dtype.

A rule rather than triton.autotune: the sequence kernel runs a whole layer in one launch, so
timing candidates would run the layer several times on the first call, and the state it
writes (y, gates, cells) would need restoring between candidates. The rule is small enough to
read in full below; its constants are NOT tuned on a GPU yet (no GPU in the session that
wrote it) and are the first thing to measure.

Also here: `new_output`, which allocates every kernel output, and `poison_outputs`, which
makes it fill them with NaN first so that a test catches any element a kernel forgets.
"""
import contextlib
import os

import torch
import triton

# Set through poison_outputs() (tests); outputs are then NaN before the kernels run.
_POISON = False
# Set through force_path() (tests, benchmarks); None = the rule of choose_path.
_FORCED_PATH = None

# The sequence kernel keeps W_hh (4 tiles of BLOCK_R x BLOCK_H) and W_hr (BLOCK_H x BLOCK_R)
# of one direction in registers for the whole time loop, in one program per (direction,
# batch block). That fits one SM's register file for H, R <= 64 (4*64*64 + 64*64 = 20480
# 16-bit elements over 8 warps is 40 registers a thread for fp16, 80 for fp32) and nothing
# larger; bigger layers take the step path (cuBLAS GEMM + gate kernel per step) until a
# multi-program sequence kernel with a grid-wide barrier per step exists.
SEQUENCE_MAX_WEIGHT_ELEMENTS = 4 * 64 * 64 + 64 * 64
# tl.dot needs every block dimension >= 16.
MIN_DOT_BLOCK = 16


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype of the kernels: float32, or float64 for float64 inputs."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def new_output(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
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
    """Within the block, every layer call takes `path` ("sequence" or "step"; None = rule)."""
    global _FORCED_PATH
    if path not in (None, "sequence", "step"):
        raise ValueError(f"force_path: path must be 'sequence', 'step' or None, got {path!r}")
    old, _FORCED_PATH = _FORCED_PATH, path
    try:
        yield
    finally:
        _FORCED_PATH = old


def dot_block(n: int) -> int:
    return max(MIN_DOT_BLOCK, triton.next_power_of_2(max(n, 1)))


def sequence_fits(H: int, R: int, proj: bool) -> bool:
    """Whether the recurrent weights of one direction fit on chip for the sequence kernel."""
    bh, br = dot_block(H), dot_block(R)
    return 4 * br * bh + (bh * br if proj else 0) <= SEQUENCE_MAX_WEIGHT_ELEMENTS


def choose_path(T: int, H: int, R: int, proj: bool) -> str:
    """"sequence" (one launch for the whole layer) or "step" (a gate launch per step).

    T == 1 (LSTMCell, or a one-step layer) takes the step path: there is no recurrence to keep
    on chip and the one GEMM is cuBLAS's. Layers whose weights do not fit (sequence_fits) take
    the step path too."""
    if _FORCED_PATH is not None:
        return _FORCED_PATH
    if T > 1 and sequence_fits(H, R, proj):
        return "sequence"
    return "step"


def gate_config(B: int, H: int, dtype: torch.dtype):
    """(BLOCK_B, BLOCK_H, num_warps) of the element-wise gate kernels: about 2048 elements of
    each of the 4 gates per program, wider H blocks first (coalesced rows)."""
    block_h = min(triton.next_power_of_2(max(H, 1)), 256 if dtype != torch.float64 else 128)
    block_b = min(triton.next_power_of_2(max(B, 1)), max(1, 2048 // block_h))
    num_warps = 4 if block_b * block_h >= 1024 else 2
    return block_b, block_h, num_warps


def sequence_config(B: int, H: int, R: int, dtype: torch.dtype):
    """(BLOCK_B, BLOCK_H, BLOCK_R, num_warps) of the sequence kernels.

    BLOCK_B is the M of the per-step tl.dot: 16 (the smallest tl.dot tile) while B is small,
    so that B/16 programs per direction spread over the SMs; 32 from B = 512 on (enough
    programs anyway, and a fuller MMA). 8 warps hold the weights in registers (see
    SEQUENCE_MAX_WEIGHT_ELEMENTS), 4 when they are small."""
    block_b = 16 if B < 512 else 32
    bh, br = dot_block(H), dot_block(R)
    num_warps = 8 if 4 * bh * br * (2 if dtype in (torch.float32, torch.float64) else 1) > 8192 else 4
    return block_b, bh, br, num_warps
