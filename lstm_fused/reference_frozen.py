"""The math of the frozen LSTM layer (lstm_frozen_layer, docs/contract.md "Frozen inference")
in plain PyTorch: the ground truth of its tests, and what runs where the C++ kernel does not
(other devices, the operator's Triton twin).

Weights packed as csrc/lstm_frozen_args.h says (lstm_fused/frozen.py packs them):
(P, K_q, 4, U, q), U = 16 units per panel, q values per dot step: float32 (q = 1), bfloat16
(q = 2) or uint8 = int8 + 128 (q = 4) with a float32 scale per weight row (P, 4, U).

Per step t, with act() what the products see of an activation row a (x_t or h_{t-1}):
  float32   act(a) = a
  bfloat16  act(a) = a rounded to bfloat16 (nearest even)
  int8      s = max|a| / 127, act(a) = s * round(a * (127 / max|a|)) (int8 values, computed in
            float32 as the kernel does; a row with max|a| < 1e-30 counts as zeros)
  z_t = act(x_t) W_ih^T + bias + act(h_{t-1}) W_hh^T, then the gates of docs/contract.md,
  section 1 (no peepholes, no projection, one direction).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import reference

U = 16
TINY_ROW = 1e-30  # int8: a row with max |a| below this is taken as zeros (the kernel's kTinyRow)
GROUP = {torch.float32: 1, torch.bfloat16: 2, torch.uint8: 4}


def unpack(packed: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(P, K_q, 4, U, q) -> (4 * rows, cols) in the packed dtype (uint8 values minus 128 as
    int16): the inverse of frozen.pack."""
    P, Kq, _, _, q = packed.shape
    w = packed.permute(2, 0, 3, 1, 4).reshape(4, P * U, Kq * q)[:, :rows, :cols]
    if packed.dtype == torch.uint8:
        w = w.to(torch.int16) - 128
    return w.reshape(4 * rows, cols)


def unpack_rows(per_unit: torch.Tensor, rows: int) -> torch.Tensor:
    """(P, 4, U) -> (4 * rows,) (bias, scales)."""
    return per_unit.permute(1, 0, 2).reshape(4, -1)[:, :rows].reshape(-1)


def quantize_activations(a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of float32 a (M, K) -> (int8 values as float32 (M, K), scales (M, 1)), as the
    kernel computes them. A row with inf or NaN gets a NaN scale."""
    amax = a.abs().amax(dim=-1, keepdim=True)
    finite = torch.isfinite(amax)
    used = finite & (amax >= TINY_ROW)
    safe = torch.where(used, amax, torch.ones_like(amax))
    inv = torch.tensor(127.0, dtype=torch.float32) / safe
    q = torch.round(a * inv).clamp(-127, 127)
    q = torch.where(used, q, torch.zeros_like(q))
    scale = torch.where(
        finite,
        torch.where(used, amax / 127.0, torch.zeros_like(amax)),
        torch.full_like(amax, float("nan")),
    )
    return q, scale


def _product(a: torch.Tensor, w: torch.Tensor, w_scale: Optional[torch.Tensor], kind, compute):
    """act(a) (M, K) float32 times w (N, K) as the products see them, in `compute`."""
    if kind == torch.uint8:
        q, s = quantize_activations(a)
        prod = q.to(compute) @ w.to(compute).t()  # exact: small integers
        return prod * (s.to(compute) * w_scale.to(compute)[None, :])
    if kind == torch.bfloat16:
        a = a.to(torch.bfloat16)
    return a.to(compute) @ w.to(compute).t()


def lstm_frozen_layer(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    bias: torch.Tensor,
    w_ih_scale: Optional[torch.Tensor] = None,
    w_hh_scale: Optional[torch.Tensor] = None,
    compute: torch.dtype = torch.float32,
):
    """x (T, B, I) float32, h0, c0 (B, H) -> y (T, B, H), h_n, c_n (B, H) in float32; the
    products and the gate math in `compute` (float64 in the tests), activations prepared in
    float32 as the kernel prepares them."""
    T, B, I = x.shape
    H = h0.shape[1]
    kind = w_hh.dtype
    wi, wh = unpack(w_ih, H, I), unpack(w_hh, H, H)
    si = unpack_rows(w_ih_scale, H) if w_ih_scale is not None else None
    sh = unpack_rows(w_hh_scale, H) if w_hh_scale is not None else None
    b = unpack_rows(bias, H).to(compute)
    gx = _product(x.reshape(T * B, I).float(), wi, si, kind, compute).reshape(T, B, 4 * H) + b
    h, c = h0.float(), c0.to(compute)
    ys = []
    for t in range(T):
        z = gx[t] + _product(h, wh, sh, kind, compute)
        h_c, c = reference.cell_update(z, c)
        h = h_c.float()  # the kernel keeps h in float32
        ys.append(h_c)
    y = torch.stack(ys) if ys else x.new_empty(0, B, H, dtype=compute)
    return y.float(), h.float().clone(), c.float()
