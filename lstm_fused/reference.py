"""Plain PyTorch versions of every op: the ground truth of the tests and backend="reference".

Written for clarity, one time step at a time; float64-capable, differentiable by autograd.
Shapes use the letters of docs/contract.md (T, B, I, H, P, R = P or H, G = 4H, D directions).
"""

from __future__ import annotations

import torch


def lstm_cell(x, h, c, w_ih, w_hh, bias=None, w_hr=None, w_peep=None):
    """One LSTM step (docs/contract.md, section 1). x (B, I), h (B, R), c (B, H), w_ih (G, I), w_hh (G, R),
    bias (G,), w_hr (P, H), w_peep (3, H) rows w_ci, w_cf, w_co. Returns (h', c')."""
    z = x @ w_ih.t() + h @ w_hh.t()
    if bias is not None:
        z = z + bias
    h_new, c_new = cell_update(z, c, w_peep)
    if w_hr is not None:
        h_new = h_new @ w_hr.t()
    return h_new, c_new


def cell_update(z, c, w_peep=None):
    """The gate math of one step: pre-activations z (B, 4H) in the order i, f, g, o, the
    previous cell c (B, H), peepholes w_peep (3, H) or None. Returns (h, c') before any
    projection."""
    z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
    if w_peep is not None:
        z_i = z_i + w_peep[0] * c
        z_f = z_f + w_peep[1] * c
    i, f, g = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g)
    c_new = f * c + i * g
    if w_peep is not None:
        z_o = z_o + w_peep[2] * c_new
    return torch.sigmoid(z_o) * torch.tanh(c_new), c_new


def reset_before(resets, direction: int, valid=None):
    """Where each row of one direction starts step t from the initial state: (T, B, 1) bool.

    resets (T, B) bool: a reset at t is the boundary between steps t-1 and t. Direction 0
    starts step t afresh where resets[t] (0 < t); direction 1, running t downwards, starts step
    t - 1 afresh, i.e. step t where resets[t + 1] (t + 1 < T). valid (T, B, 1) or None: resets
    at padded steps (t >= lengths[b]) are ignored."""
    T = resets.shape[0]
    flags = resets if valid is None else resets & valid.squeeze(2)
    none = torch.zeros_like(flags[:1])
    if direction == 0:
        shifted = torch.cat([none, flags[1:]]) if T > 0 else flags
    else:
        shifted = torch.cat([flags[1:], none]) if T > 0 else flags
    return shifted.unsqueeze(2)


def lstm_layer(x, h0, c0, w_ih, w_hh, bias=None, w_hr=None, w_peep=None, lengths=None, resets=None):
    """One layer, every direction (csrc/lstm_layer_args.h has the shapes).

    x (T, B, I); h0 (D, B, R); c0 (D, B, H); w_ih (D, G, I); w_hh (D, G, R); bias (D, G);
    w_hr (D, P, H); w_peep (D, 3, H); lengths (B,) int64: steps t >= lengths[b] keep the state
    and output zeros. Direction 1 runs from t = T - 1 down to 0.
    resets (T, B) bool or None: where resets[t, b] is set, row b's state (h, c) is replaced by
    (h0[d, b], c0[d, b]) at the boundary between steps t-1 and t: direction 0 before step t,
    direction 1 before step t-1 (reset_before). No gradient crosses a reset.
    Returns y (T, B, D*R), h_n (D, B, R), c_n (D, B, H).
    """
    T, B = x.shape[0], x.shape[1]
    D = w_ih.shape[0]
    ys, h_ns, c_ns = [], [], []
    valid = None
    if lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)
        valid = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
        x = x.masked_fill(~valid, 0)  # padding is never read, even when it holds NaN
    if resets is not None:
        resets = resets.to(device=x.device, dtype=torch.bool)
    for d in range(D):
        h, c = h0[d], c0[d]
        fresh = None if resets is None else reset_before(resets, d, valid)
        outs = [None] * T
        order = range(T - 1, -1, -1) if d == 1 else range(T)
        for t in order:
            if fresh is not None:
                h = torch.where(fresh[t], h0[d], h)
                c = torch.where(fresh[t], c0[d], c)
            h_new, c_new = lstm_cell(
                x[t],
                h,
                c,
                w_ih[d],
                w_hh[d],
                None if bias is None else bias[d],
                None if w_hr is None else w_hr[d],
                None if w_peep is None else w_peep[d],
            )
            if valid is not None:
                h = torch.where(valid[t], h_new, h)
                c = torch.where(valid[t], c_new, c)
                outs[t] = torch.where(valid[t], h_new, torch.zeros_like(h_new))
            else:
                h, c = h_new, c_new
                outs[t] = h_new
        ys.append(torch.stack(outs) if T > 0 else x.new_zeros((0, B, h0.shape[2])))
        h_ns.append(h)
        c_ns.append(c)
    return torch.cat(ys, dim=2), torch.stack(h_ns), torch.stack(c_ns)


# Attention (docs/contract.md, section 2): masked softmax, additive attention pooling, channel attention.
# Batch-major shapes: x (B, T, D); lengths (B,) int64, positions t >= lengths[b] are padding.
# Padding is never read into a result: it is replaced by zeros before any arithmetic, so NaN or
# inf stored there cannot leak (0 * nan would be nan).


def valid_mask(lengths, batch: int, steps: int, device) -> torch.Tensor:
    """(B, T) bool, True where t < lengths[b]; all True when lengths is None."""
    if lengths is None:
        return torch.ones((batch, steps), dtype=torch.bool, device=device)
    return torch.arange(steps, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def masked_softmax(scores, keep=None, scale: float = 1.0):
    """softmax(scale * scores) along the last axis over the positions where keep (bool,
    broadcastable to scores) is True; excluded positions get exactly 0, a row with nothing
    kept is all zeros."""
    s = scores * scale
    if keep is None:
        return torch.softmax(s, dim=-1)
    keep = keep.expand_as(s)
    if s.shape[-1] == 0:
        return s.clone()
    s = torch.where(keep, s, torch.zeros_like(s))  # drop whatever padding holds (nan, inf)
    s = torch.where(keep, s, torch.full_like(s, float("-inf")))
    m = s.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))  # empty rows: no -inf - -inf
    e = torch.where(keep, torch.exp(s - m), torch.zeros_like(s))
    denom = e.sum(dim=-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


def attention_pooling(x, proj, v, qproj=None, lengths=None):
    """Additive (Bahdanau) pooling after the W_h product (docs/contract.md, section 2).

    x (B, T, D); proj (B, T, A) = x W_h^T + b; v (A,); qproj (B, A) = q W_q^T or None.
    e_t = v . tanh(proj_t + qproj); alpha = masked softmax of e over t < lengths[b];
    c = sum_t alpha_t x_t. Returns (c (B, D), alpha (B, T), lse (B,)) where lse is the
    log-sum-exp of the valid scores (-inf for an empty row).
    """
    B, T = x.shape[0], x.shape[1]
    keep = valid_mask(lengths, B, T, x.device)
    u = proj if qproj is None else proj + qproj.unsqueeze(1)
    u = torch.where(keep.unsqueeze(2), u, torch.zeros_like(u))
    e = torch.tanh(u) @ v  # (B, T)
    alpha = masked_softmax(e, keep)
    xs = torch.where(keep.unsqueeze(2), x, torch.zeros_like(x))
    c = (alpha.unsqueeze(2) * xs).sum(dim=1)
    # log-sum-exp of the valid scores; empty rows are -inf, computed so that no NaN gradient
    # comes out of them (logsumexp of an all -inf row has a NaN gradient).
    empty = ~keep.any(dim=1, keepdim=True)
    e_valid = torch.where(
        keep | empty, torch.where(keep, e, torch.zeros_like(e)), torch.full_like(e, float("-inf"))
    )
    lse = torch.logsumexp(e_valid, dim=1) if T > 0 else e.new_zeros((B,))
    lse = torch.where(empty.squeeze(1), torch.full_like(lse, float("-inf")), lse)
    return c, alpha, lse


def masked_mean(x, lengths=None):
    """Mean of x (B, T, C) over t < lengths[b] -> (B, C); zero for an empty row."""
    B, T = x.shape[0], x.shape[1]
    keep = valid_mask(lengths, B, T, x.device).unsqueeze(2)
    total = torch.where(keep, x, torch.zeros_like(x)).sum(dim=1)
    count = keep.sum(dim=1).to(x.dtype)
    return total / count.clamp(min=1)


def channel_rescale(x, w, lengths=None):
    """y[b, t, c] = x[b, t, c] * w[b, c] for t < lengths[b], 0 on padding. x (B, T, C), w (B, C)."""
    B, T = x.shape[0], x.shape[1]
    keep = valid_mask(lengths, B, T, x.device).unsqueeze(2)
    return torch.where(keep, x, torch.zeros_like(x)) * w.unsqueeze(1)


# Multi-head self-attention (docs/contract.md, section 2) lives in reference_mhsa.py; its entry points are part of
# the reference too.
from .reference_mhsa import attention_core, multihead_self_attention  # noqa: E402,F401
