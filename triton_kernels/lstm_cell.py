"""Fused LSTM gate kernels (one time step) and the step-by-step layer path built on them.

The gate kernel takes the pre-activations z = x_t W_ih^T + b + r_{t-1} W_hh^T of one step
(computed by cuBLAS / torch), does the i, f, g, o math and writes the gates, c and h in one
pass; its backward turns the gradient of h and c into the gradient of z. The step path runs
one direction of a layer as T GEMMs + T gate launches. It is the simple path: LSTMCell
(T = 1) and every layer whose recurrent weights do not fit on one SM take it
(tuning.choose_path).

Shapes (the letters of docs/contract.md): B batch, H hidden, G = 4H, R = P or H, D directions, T steps.
"""

import torch
import triton
import triton.language as tl

from .launch_config import full_register_budget, kernel_config
from .lstm_math import cell_backward, cell_forward, load_peephole
from .tuning import acc_dtype, gate_config, new_output


# The step index t is a runtime argument, never specialised: Triton would otherwise compile
# t = 1 (and t divisible by 16) as variants of their own.
@triton.jit(do_not_specialize=("t",))
def lstm_gate_forward_kernel(
    z_ptr,
    c_ptr,
    peep_ptr,
    len_ptr,
    gates_ptr,
    cells_ptr,
    h_out_ptr,
    h_state_ptr,
    t,
    B,
    H,
    stride_h_out,
    HAS_LEN: tl.constexpr,
    PEEP: tl.constexpr,
    WRITE_STATE: tl.constexpr,
    SAVE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """One step. z (B, G) pre-activations; c (B, H) cell state in the accumulation dtype,
    updated in place; peep (3, H); gates (B, G) and cells (B, H): this step's slices of the
    saved tensors (written when SAVE); h_out (B, H) rows of stride stride_h_out: o tanh(c),
    zero where t >= lengths[b]; h_state (B, H): updated in place on valid rows when
    WRITE_STATE (no projection).
    Grid: (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H))."""
    ACC = c_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    rmask = rows < B
    cmask = cols < H
    m2 = rmask[:, None] & cmask[None, :]
    if HAS_LEN:
        valid = t < tl.load(len_ptr + rows, mask=rmask, other=0)
    else:
        valid = rmask
    v2 = valid[:, None] & m2
    G = 4 * H
    z_row = z_ptr + rows[:, None] * G + cols[None, :]
    # .to(ACC) right after every load: the interpreter miscomputes bfloat16 arithmetic.
    z_i = tl.load(z_row, mask=m2, other=0.0).to(ACC)
    z_f = tl.load(z_row + H, mask=m2, other=0.0).to(ACC)
    z_g = tl.load(z_row + 2 * H, mask=m2, other=0.0).to(ACC)
    z_o = tl.load(z_row + 3 * H, mask=m2, other=0.0).to(ACC)
    hc = rows[:, None] * H + cols[None, :]
    c_prev = tl.load(c_ptr + hc, mask=m2, other=0.0)
    w_ci, w_cf, w_co = load_peephole(peep_ptr, cols, cmask, H, ACC, PEEP)
    i, f, g, o, c, h = cell_forward(z_i, z_f, z_g, z_o, c_prev, w_ci, w_cf, w_co, PEEP)
    # Padded steps: gates zero, cell carried, output zero, state unchanged.
    c_keep = tl.where(v2, c, c_prev)
    if SAVE:
        g_row = gates_ptr + rows[:, None] * G + cols[None, :]
        tl.store(g_row, tl.where(v2, i, 0.0), mask=m2)
        tl.store(g_row + H, tl.where(v2, f, 0.0), mask=m2)
        tl.store(g_row + 2 * H, tl.where(v2, g, 0.0), mask=m2)
        tl.store(g_row + 3 * H, tl.where(v2, o, 0.0), mask=m2)
        tl.store(cells_ptr + hc, c_keep, mask=m2)
    tl.store(c_ptr + hc, c_keep, mask=m2)
    tl.store(
        h_out_ptr + rows[:, None] * stride_h_out + cols[None, :], tl.where(v2, h, 0.0), mask=m2
    )
    if WRITE_STATE:
        tl.store(h_state_ptr + hc, h, mask=v2)


@triton.jit(do_not_specialize=("t",))
def lstm_gate_backward_kernel(
    dh_ptr,
    dc_ptr,
    gates_ptr,
    cells_ptr,
    c_prev_ptr,
    peep_ptr,
    len_ptr,
    dz_ptr,
    t,
    B,
    H,
    stride_dz,
    HAS_LEN: tl.constexpr,
    PEEP: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """Backward of one step. dh (B, H): gradient of o tanh(c) at this step; dc (B, H): gradient
    of c from later steps (accumulation dtype), replaced in place by the gradient of c_prev on
    valid rows; gates (B, G), cells (B, H), c_prev (B, H): saved values; dz (B, G) rows of
    stride stride_dz: gradient of the pre-activations, zero where t >= lengths[b]."""
    ACC = dc_ptr.dtype.element_ty
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    rmask = rows < B
    cmask = cols < H
    m2 = rmask[:, None] & cmask[None, :]
    if HAS_LEN:
        valid = t < tl.load(len_ptr + rows, mask=rmask, other=0)
    else:
        valid = rmask
    v2 = valid[:, None] & m2
    G = 4 * H
    hc = rows[:, None] * H + cols[None, :]
    g_row = gates_ptr + rows[:, None] * G + cols[None, :]
    i = tl.load(g_row, mask=m2, other=0.0).to(ACC)
    f = tl.load(g_row + H, mask=m2, other=0.0).to(ACC)
    g = tl.load(g_row + 2 * H, mask=m2, other=0.0).to(ACC)
    o = tl.load(g_row + 3 * H, mask=m2, other=0.0).to(ACC)
    c = tl.load(cells_ptr + hc, mask=m2, other=0.0).to(ACC)
    c_prev = tl.load(c_prev_ptr + hc, mask=m2, other=0.0).to(ACC)
    dh = tl.load(dh_ptr + hc, mask=m2, other=0.0).to(ACC)
    dc = tl.load(dc_ptr + hc, mask=m2, other=0.0)
    w_ci, w_cf, w_co = load_peephole(peep_ptr, cols, cmask, H, ACC, PEEP)
    dz_i, dz_f, dz_g, dz_o, dc_prev = cell_backward(
        i, f, g, o, c, c_prev, dh, dc, w_ci, w_cf, w_co, PEEP
    )
    dz_row = dz_ptr + rows[:, None] * stride_dz + cols[None, :]
    tl.store(dz_row, tl.where(v2, dz_i, 0.0), mask=m2)
    tl.store(dz_row + H, tl.where(v2, dz_f, 0.0), mask=m2)
    tl.store(dz_row + 2 * H, tl.where(v2, dz_g, 0.0), mask=m2)
    tl.store(dz_row + 3 * H, tl.where(v2, dz_o, 0.0), mask=m2)
    tl.store(dc_ptr + hc, dc_prev, mask=v2)


def gate_forward_config(B, H, dtype, has_len, peep, write_state, save, target):
    """The KernelConfig of lstm_gate_forward_kernel for a (B, H) step of `dtype` on `target`
    (launch_config.py): element-wise, so the same on every target."""
    block_b, block_h, num_warps = gate_config(B, H, dtype)
    acc = acc_dtype(dtype)
    return kernel_config(
        lstm_gate_forward_kernel,
        dict(
            HAS_LEN=has_len,
            PEEP=peep,
            WRITE_STATE=write_state,
            SAVE=save,
            BLOCK_B=block_b,
            BLOCK_H=block_h,
        ),
        num_warps,
        1,
        dtype,
        pointers=dict(c_ptr=acc, len_ptr=torch.int64),
        maxnreg=full_register_budget(num_warps),
    )


def gate_backward_config(B, H, dtype, has_len, peep, target):
    """The KernelConfig of lstm_gate_backward_kernel (see gate_forward_config)."""
    block_b, block_h, num_warps = gate_config(B, H, dtype)
    return kernel_config(
        lstm_gate_backward_kernel,
        dict(HAS_LEN=has_len, PEEP=peep, BLOCK_B=block_b, BLOCK_H=block_h),
        num_warps,
        1,
        dtype,
        pointers=dict(dc_ptr=acc_dtype(dtype), len_ptr=torch.int64),
        maxnreg=full_register_budget(num_warps),
    )


def _keep_valid(lengths, t, new, old):
    """Rows of `new` where sequence b is still running at step t (t < lengths[b]), else of
    `old`; all of `new` without lengths."""
    if lengths is None:
        return new
    return torch.where((lengths > t).unsqueeze(1), new, old)


def reset_before(resets, lengths, d):
    """Which rows of direction d start step t from the initial state: (T, B) bool, or None
    without resets (csrc/lstm_layer_args.h). resets (T, B) bool: direction 0 where resets[t]
    (t > 0), direction 1 where resets[t + 1]; flags at t >= lengths[b] ignored."""
    if resets is None:
        return None
    T = resets.shape[0]
    none = torch.zeros_like(resets[:1])
    fresh = torch.cat([none, resets[1:]]) if d == 0 else torch.cat([resets[1:], none])
    if lengths is not None:
        flag_t = torch.arange(d, T + d, device=resets.device).unsqueeze(1)  # (T, 1)
        fresh = fresh & (flag_t < lengths.unsqueeze(0))
    return fresh


def step_forward(gx, h0, c0, w_hh, w_hr, w_peep, lengths, save=True, target=None, resets=None):
    """Forward of one layer, one gate launch per step and direction.

    gx (T, B, D, G): input projections plus bias; h0 (D, B, R); c0 (D, B, H); w_hh (D, G, R);
    w_hr (D, P, H) or None; w_peep (D, 3, H) or None; lengths (B,) int64 or None; resets
    (T, B) bool or None (reset_before).
    Returns y (T, B, D*R), h_n (D, B, R), c_n (D, B, H), gates (D, T, B, G), cells (D, T, B, H)
    (gates and cells None when not `save`).
    """
    T, B, D, G = gx.shape
    H, R = G // 4, h0.shape[2]
    dtype, dev = gx.dtype, gx.device
    proj = w_hr is not None
    y = new_output((T, B, D * R), gx)
    h_n = new_output((D, B, R), gx)
    c_n = new_output((D, B, H), gx)
    gates = new_output((D, T, B, G), gx) if save else None
    cells = new_output((D, T, B, H), gx) if save else None
    cfg = gate_forward_config(
        B, H, dtype, lengths is not None, w_peep is not None, not proj, save, target
    )
    meta = cfg.meta()
    grid = (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(H, meta["BLOCK_H"]))
    lens = lengths if lengths is not None else gx  # a dummy pointer when HAS_LEN is False
    for d in range(D):
        h = h0[d].contiguous().clone()  # (B, R)
        c = c0[d].to(acc_dtype(dtype)).contiguous().clone()  # (B, H), updated by the kernel
        peep = w_peep[d].contiguous() if w_peep is not None else c
        hpre = torch.empty((B, H), dtype=dtype, device=dev) if proj else None
        w_t = w_hh[d].t()
        fresh = reset_before(resets, lengths, d)
        c_init = c.clone() if fresh is not None else None
        for s in range(T):
            t = T - 1 - s if d == 1 else s
            if fresh is not None:  # these rows start step t from (h0, c0)
                h = torch.where(fresh[t].unsqueeze(1), h0[d], h)
                c = torch.where(fresh[t].unsqueeze(1), c_init, c)
            z = torch.addmm(gx[t, :, d], h, w_t)  # (B, G)
            h_out = hpre if proj else y[t, :, d * R : (d + 1) * R]
            cfg.launch(
                grid,
                z,
                c,
                peep,
                lens,
                gates[d, t] if save else z,
                cells[d, t] if save else z,
                h_out,
                h,
                t,
                B,
                H,
                h_out.stride(0),
            )
            if proj:  # hpre is zero on padded rows, so r is too
                r = hpre @ w_hr[d].t()
                y[t, :, d * R : (d + 1) * R] = r
                h = _keep_valid(lengths, t, r, h)
        h_n[d] = h
        c_n[d] = c
    return y, h_n, c_n, gates, cells


def step_backward(
    grad_y,
    grad_h_n,
    grad_c_n,
    c0,
    w_hh,
    w_hr,
    w_peep,
    lengths,
    gates,
    cells,
    target=None,
    resets=None,
):
    """Reverse time loop of one layer, one gate launch per step and direction. resets (T, B)
    bool or None: no gradient crosses a reset, the gradient of a step that started from
    (h0, c0) is added to grad_h0, grad_c0.

    Returns dZ (T, B, D, G) (gradient of the pre-activations, zero at padded steps),
    dR (D, T, B, R) (gradient of each step's output r, zero at padded steps; None without a
    projection), grad_h0 (D, B, R), grad_c0 (D, B, H)."""
    D, T, B, G = gates.shape
    H, R = G // 4, grad_h_n.shape[2]
    dtype = gates.dtype
    proj = w_hr is not None
    dZ = new_output((T, B, D, G), gates)
    dR = new_output((D, T, B, R), gates) if proj else None
    grad_h0 = new_output((D, B, R), gates)
    grad_c0 = new_output((D, B, H), gates)
    cfg = gate_backward_config(B, H, dtype, lengths is not None, w_peep is not None, target)
    meta = cfg.meta()
    grid = (triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(H, meta["BLOCK_H"]))
    lens = lengths if lengths is not None else gates
    for d in range(D):
        dh = grad_h_n[d].contiguous().clone()  # (B, R)
        dc = grad_c_n[d].to(acc_dtype(dtype)).contiguous().clone()  # (B, H)
        peep = w_peep[d].contiguous() if w_peep is not None else dc
        c0_d = c0[d].contiguous()
        fresh = reset_before(resets, lengths, d)
        if fresh is not None:
            dh0_sum, dc0_sum = torch.zeros_like(dh), torch.zeros_like(dc)
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if d == 1 else s
            dr = _keep_valid(lengths, t, grad_y[t, :, d * R : (d + 1) * R] + dh, 0.0)  # (B, R)
            if proj:
                dR[d, t] = dr
                dhpre = (dr @ w_hr[d]).contiguous()  # (B, H)
            else:
                dhpre = dr.contiguous()
            c_prev = c0_d if s == 0 else cells[d, t + 1 if d == 1 else t - 1]
            if fresh is not None and s > 0:
                c_prev = torch.where(fresh[t].unsqueeze(1), c0_d, c_prev)
            dz = dZ[t, :, d]  # (B, G), rows of stride D*G
            cfg.launch(
                grid,
                dhpre,
                dc,
                gates[d, t],
                cells[d, t],
                c_prev,
                peep,
                lens,
                dz,
                t,
                B,
                H,
                dz.stride(0),
            )
            dh = _keep_valid(lengths, t, dz @ w_hh[d], dh)
            if fresh is not None:  # step t started from (h0, c0): its gradient goes there
                cut = fresh[t].unsqueeze(1)
                dh0_sum += torch.where(cut, dh, 0.0)
                dc0_sum += torch.where(cut, dc, 0.0)
                dh = torch.where(cut, 0.0, dh)
                dc.masked_fill_(cut, 0.0)
        if fresh is not None:
            dh, dc = dh + dh0_sum, dc + dc0_sum
        grad_h0[d] = dh
        grad_c0[d] = dc
    return dZ, dR, grad_h0, grad_c0
