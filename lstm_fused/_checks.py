"""Checks of user input: every message names the argument, what it got and what it expected.
By default shapes raise ValueError, dtypes TypeError, devices RuntimeError; `exc` gives another
type where the torch.nn module a caller replaces raises another one for the same input (nn.LSTM
raises RuntimeError for a hidden state of the wrong shape, for example)."""
from __future__ import annotations

import torch


class ShapeError(ValueError, AssertionError):
    """A shape that does not fit, where the torch.nn module replaced checks it with `assert`
    (nn.MultiheadAttention): `except ValueError` and nn's `except AssertionError` both catch it
    (as numpy's AxisError is both a ValueError and an IndexError)."""


def _shape(t) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def check_tensor(t, name: str, *, where: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")


def check_dtype(t: torch.Tensor, name: str, expected: torch.dtype, *, where: str,
                exc: type = TypeError) -> None:
    if t.dtype != expected:
        raise exc(f"{where}: {name} has dtype {t.dtype}, expected {expected} "
                        f"(the dtype of the module's parameters)")


def check_device(t: torch.Tensor, name: str, expected: torch.device, *, where: str) -> None:
    if t.device != expected:
        raise RuntimeError(f"{where}: {name} is on {t.device}, expected {expected} "
                           f"(the device of the input and the module's parameters)")


def check_shape(t: torch.Tensor, name: str, expected: tuple, *, where: str,
                exc: type = ValueError) -> None:
    if tuple(t.shape) != tuple(expected):
        exp = "(" + ", ".join(str(s) for s in expected) + ")"
        raise exc(f"{where}: {name} has shape {_shape(t)}, expected {exp}")


def check_lengths(lengths, batch: int, steps: int, *, where: str, device=None,
                  values: bool = True) -> torch.Tensor:
    """lengths (B,) of integers in [0, T]; returns it as int64 on `device`. values=False leaves
    the range to the function called next (lstm_fused.functional.lstm checks it once)."""
    check_tensor(lengths, "lengths", where=where)
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"{where}: lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{where}: lengths has shape {_shape(lengths)}, expected ({batch},) "
                         f"(one length per batch element)")
    if values and not torch.compiler.is_compiling() and lengths.numel() > 0:
        check_lengths_range(lengths, steps, where=where)  # before the copy: free on the host
    return lengths.to(device=device, dtype=torch.int64)


def check_lengths_range(lengths: torch.Tensor, steps: int, *, where: str) -> None:
    """Every length in [0, T]: one read of (min, max), so one device synchronisation at most."""
    lo, hi = torch.stack(torch.aminmax(lengths)).tolist()
    if lo < 0 or hi > steps:
        raise ValueError(f"{where}: lengths must lie in [0, {steps}] (the sequence length), "
                         f"got values from {lo} to {hi}")
