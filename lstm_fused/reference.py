"""Plain PyTorch versions of every op: the ground truth of the tests and backend="reference".

Written for clarity, one time step at a time; float64-capable, differentiable by autograd.
Shapes use the letters of SPEC.md (T, B, I, H, P, R = P or H, G = 4H, D directions).
"""
from __future__ import annotations

import torch


def lstm_cell(x, h, c, w_ih, w_hh, bias=None, w_hr=None, w_peep=None):
    """One LSTM step (SPEC §1). x (B, I), h (B, R), c (B, H), w_ih (G, I), w_hh (G, R),
    bias (G,), w_hr (P, H), w_peep (3, H) rows w_ci, w_cf, w_co. Returns (h', c')."""
    z = x @ w_ih.t() + h @ w_hh.t()
    if bias is not None:
        z = z + bias
    z_i, z_f, z_g, z_o = z.chunk(4, dim=-1)
    if w_peep is not None:
        z_i = z_i + w_peep[0] * c
        z_f = z_f + w_peep[1] * c
    i, f, g = torch.sigmoid(z_i), torch.sigmoid(z_f), torch.tanh(z_g)
    c_new = f * c + i * g
    if w_peep is not None:
        z_o = z_o + w_peep[2] * c_new
    h_new = torch.sigmoid(z_o) * torch.tanh(c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.t()
    return h_new, c_new


def lstm_layer(x, h0, c0, w_ih, w_hh, bias=None, w_hr=None, w_peep=None, lengths=None):
    """One layer, every direction (csrc/lstm_layer_args.h has the shapes).

    x (T, B, I); h0 (D, B, R); c0 (D, B, H); w_ih (D, G, I); w_hh (D, G, R); bias (D, G);
    w_hr (D, P, H); w_peep (D, 3, H); lengths (B,) int64: steps t >= lengths[b] keep the state
    and output zeros. Direction 1 runs from t = T - 1 down to 0.
    Returns y (T, B, D*R), h_n (D, B, R), c_n (D, B, H).
    """
    T, B = x.shape[0], x.shape[1]
    D = w_ih.shape[0]
    ys, h_ns, c_ns = [], [], []
    valid = None
    if lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)
        valid = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
    for d in range(D):
        h, c = h0[d], c0[d]
        outs = [None] * T
        order = range(T - 1, -1, -1) if d == 1 else range(T)
        for t in order:
            h_new, c_new = lstm_cell(
                x[t], h, c, w_ih[d], w_hh[d],
                None if bias is None else bias[d],
                None if w_hr is None else w_hr[d],
                None if w_peep is None else w_peep[d])
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
