"""Checks of user input: every message names the argument, what it got and what it expected.
By default shapes raise ValueError, dtypes TypeError, devices RuntimeError; `exc` gives another
type where the torch.nn module a caller replaces raises another one for the same input (nn.LSTM
raises RuntimeError for a hidden state of the wrong shape, for example)."""

from __future__ import annotations

import torch

from . import onnx_export


class ShapeError(ValueError, AssertionError):
    """A shape that does not fit, where the torch.nn module replaced checks it with `assert`
    (nn.MultiheadAttention): `except ValueError` and nn's `except AssertionError` both catch it
    (as numpy's AxisError is both a ValueError and an IndexError)."""


def _shape(t) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(t, name: str, *, where: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")


def check_dtype(
    t: torch.Tensor, name: str, expected: torch.dtype, *, where: str, exc: type = TypeError
) -> None:
    if t.dtype != expected:
        raise exc(
            f"{where}: {name} has dtype {t.dtype}, expected {expected} "
            f"(the dtype of the module's parameters)"
        )


def check_device(t: torch.Tensor, name: str, expected: torch.device, *, where: str) -> None:
    if t.device != expected:
        raise RuntimeError(
            f"{where}: {name} is on {t.device}, expected {expected} "
            f"(the device of the input and the module's parameters)"
        )


def check_shape(
    t: torch.Tensor, name: str, expected: tuple, *, where: str, exc: type = ValueError
) -> None:
    if tuple(t.shape) != tuple(expected):
        exp = "(" + ", ".join(str(s) for s in expected) + ")"
        raise exc(f"{where}: {name} has shape {_shape(t)}, expected {exp}")


def check_lengths(lengths, batch: int, steps: int, *, where: str, device=None) -> torch.Tensor:
    """The one reader of `lengths` of every family: (B,) integers in [0, T], on the CPU or on
    `device` (CPU lengths for CUDA inputs are common). Returns it as int64 on `device`. One
    message per condition (the C++ operators use the same words, csrc/lengths.h): not a tensor
    or not integers TypeError, a wrong shape or a value out of [0, T] ValueError, another
    device RuntimeError."""
    check_tensor(lengths, "lengths", where=where)
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"{where}: lengths has dtype {lengths.dtype}, expected an integer dtype")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{where}: lengths has shape {tuple(lengths.shape)}, expected ({batch},)")
    if device is not None and lengths.device.type != "cpu" and lengths.device != device:
        raise RuntimeError(
            f"{where}: lengths is on {lengths.device}, expected the CPU or the "
            f"input's device ({device})"
        )
    check_lengths_range(lengths, steps, where=where)  # before the copy: free on the host
    return lengths.to(device=device, dtype=torch.int64)


def lengths_range_message(where: str, steps: int, index=None, value=None) -> str:
    """The message of a length out of [0, T] (csrc/lengths.h writes the same); without index and
    value (a device-side assert cannot say which) it names lengths[b]."""
    got = "lengths[b]" if index is None else f"lengths[{index}] = {value}"
    return f"{where}: {got} is out of range, expected 0 <= lengths[b] <= T = {steps}"


def check_lengths_range(lengths: torch.Tensor, steps: int, *, where: str) -> None:
    """Every length in [0, T]. On the host (CPU lengths: free; CUDA lengths: one device
    synchronisation, the rest only on the way to the error). Under torch.compile or CUDA graph
    capture no host read is allowed: the check becomes a device-side assert
    (torch._assert_async, a RuntimeError when it fails). Under torch.jit.trace and
    torch.onnx.export nothing is checked (the trace would bake in the values)."""
    if lengths.numel() == 0 or torch.jit.is_tracing():
        return
    if onnx_export.exporting_onnx():
        return
    valid = (lengths >= 0) & (lengths <= steps)
    if torch.compiler.is_compiling() or (
        lengths.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    ):
        torch._assert_async(valid.all(), lengths_range_message(where, steps))
        return
    if not bool(valid.all()):  # the one synchronisation
        b = int((~valid).nonzero()[0, 0])
        raise ValueError(lengths_range_message(where, steps, b, int(lengths[b])))
