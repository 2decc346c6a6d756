"""EXPERIMENTAL, never run on a GPU: persistent multi-program forward and backward for large H.

The sequence kernel (lstm_sequence.py) keeps a whole direction's W_hh in one program, which
caps H at 128 (16-bit). For larger layers this kernel splits the hidden units over programs:
grid (D, cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)); program (d, pb, ph) owns hidden units
[ph*BLOCK_H, (ph+1)*BLOCK_H) of batch block pb, keeps their c in registers, and per step
multiplies the full r_{t-1} (read back from a ping-pong buffer in global memory, through L2)
by its W_hh slice (streamed from L2 in BLOCK_K chunks: W_hh of H = 768 is 4.7 MB in 16 bits,
it stays in the 50 MB L2 of an H100). The programs of one (d, pb) exchange h through the
buffer, so on a GPU they meet at a barrier (an atomic counter) after every step; all of them
must be resident at once, which the launcher checks against the SM count.

Under the interpreter, programs run one after another, so a barrier would wait forever: there
the launcher starts one launch per step (BARRIER=False) and the kernel keeps c in a global
buffer between launches. The step math, the indexing and the h exchange are the same code and
are tested that way; the barrier itself (memory ordering, residency) has not run anywhere and
is why tuning.choose_path never picks this path by itself: only force_path("persistent") does,
for a run on a GPU to validate and time. No projection (proj_size) here: with one, the forced
path is the step path.

The backward kernel has the same structure in reverse time: program (d, pb, ph) owns the
gradients of hidden units [ph*BLOCK_H, ...); per step it reads the full dz of the step processed
before (all 4H columns, written by every program of its group to dZ in global memory) and
multiplies it by its slice of W_hh (4H x BLOCK_H, streamed from L2) to get dh for its units.
"""
import torch
import triton
import triton.language as tl

from . import interpreter_compat
from .launch_config import full_register_budget, kernel_config
from .lstm_math import cell_backward, cell_forward, load_peephole
from .tuning import acc_dtype, dot_block, new_output

interpreter_compat.apply()


@triton.jit
def _group_barrier(counter_ptr, target):
    """Wait until `target` arrivals have been counted at counter_ptr, counting this one.
    Release on arrival (this program's stores before it are visible to the others), acquire
    while waiting (their stores are visible to this program after it)."""
    tl.debug_barrier()  # every warp of this program has issued its stores
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
    seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def lstm_persistent_forward_kernel(
        gx_ptr, hbuf_ptr, c_state_ptr, w_hh_ptr, peep_ptr, len_ptr, bar_ptr,
        y_ptr, gates_ptr, cells_ptr,
        s_begin, s_end, T, B, H,
        HAS_LEN: tl.constexpr, PEEP: tl.constexpr, BARRIER: tl.constexpr, SAVE: tl.constexpr,
        DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """Forward steps s_begin .. s_end-1 (R = H, no projection). gx (T, B, D, G);
    hbuf (2, D, B, H): r before step s in slot s % 2; c_state (D, B, H) accumulation dtype;
    w_hh (D, G, H); peep (D, 3, H); lengths (B,); bar (D * cdiv(B, BLOCK_B),) int32 zeros.
    Writes y (T, B, D*H), hbuf, c_state, and when SAVE gates (D, T, B, G), cells (D, T, B, H)."""
    STORE_DT = gx_ptr.dtype.element_ty
    ACC = tl.float64 if STORE_DT == tl.float64 else tl.float32
    DOT_DT = tl.float32 if DOT_FP32 else STORE_DT
    d = tl.program_id(0)
    pb = tl.program_id(1)
    D = tl.num_programs(0)
    NB = tl.num_programs(1)
    NH = tl.num_programs(2)
    G = 4 * H
    rows = pb * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    kk = tl.arange(0, BLOCK_K)
    rmask, cmask = rows < B, cols < H
    m2 = rmask[:, None] & cmask[None, :]
    w_ci, w_cf, w_co = load_peephole(peep_ptr + d * 3 * H, cols, cmask, H, ACC, PEEP)
    state = (d * B + rows[:, None]) * H + cols[None, :]
    c = tl.load(c_state_ptr + state, mask=m2, other=0.0).to(ACC)
    if HAS_LEN:
        lens = tl.load(len_ptr + rows, mask=rmask, other=0)
    else:
        lens = tl.full([BLOCK_B], T, tl.int64)
    w_base = w_hh_ptr + d * G * H

    for s in range(s_begin, s_end):
        t = s + d * (T - 1 - 2 * s)
        valid = (t < lens)[:, None]
        t64 = t.to(tl.int64)
        cur = s % 2
        gx_row = gx_ptr + ((t64 * B + rows[:, None]) * D + d) * G + cols[None, :]
        z_i = tl.load(gx_row, mask=m2, other=0.0).to(ACC)
        z_f = tl.load(gx_row + H, mask=m2, other=0.0).to(ACC)
        z_g = tl.load(gx_row + 2 * H, mask=m2, other=0.0).to(ACC)
        z_o = tl.load(gx_row + 3 * H, mask=m2, other=0.0).to(ACC)
        h_rows = hbuf_ptr + ((cur * D + d) * B + rows[:, None]) * H
        for k0 in range(0, H, BLOCK_K):
            ks = k0 + kk
            kmask = ks < H
            # .cg: read through L2, never a stale L1 line of another program's write.
            r_k = tl.load(h_rows + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0,
                          cache_modifier=".cg").to(DOT_DT)
            w_ptrs = w_base + cols[None, :] * H + ks[:, None]  # W_hh^T chunk (BLOCK_K, BLOCK_H)
            wm = kmask[:, None] & cmask[None, :]
            z_i += tl.dot(r_k, tl.load(w_ptrs, mask=wm, other=0.0).to(DOT_DT),
                          input_precision=DOT_PRECISION, out_dtype=ACC)
            z_f += tl.dot(r_k, tl.load(w_ptrs + H * H, mask=wm, other=0.0).to(DOT_DT),
                          input_precision=DOT_PRECISION, out_dtype=ACC)
            z_g += tl.dot(r_k, tl.load(w_ptrs + 2 * H * H, mask=wm, other=0.0).to(DOT_DT),
                          input_precision=DOT_PRECISION, out_dtype=ACC)
            z_o += tl.dot(r_k, tl.load(w_ptrs + 3 * H * H, mask=wm, other=0.0).to(DOT_DT),
                          input_precision=DOT_PRECISION, out_dtype=ACC)
        i, f, g, o, c_new, h_new = cell_forward(z_i, z_f, z_g, z_o, c, w_ci, w_cf, w_co, PEEP)
        c = tl.where(valid, c_new, c)
        if SAVE:
            g_row = gates_ptr + ((d * T + t64) * B + rows[:, None]) * G + cols[None, :]
            tl.store(g_row, tl.where(valid, i, 0.0), mask=m2)
            tl.store(g_row + H, tl.where(valid, f, 0.0), mask=m2)
            tl.store(g_row + 2 * H, tl.where(valid, g, 0.0), mask=m2)
            tl.store(g_row + 3 * H, tl.where(valid, o, 0.0), mask=m2)
            tl.store(cells_ptr + ((d * T + t64) * B + rows[:, None]) * H + cols[None, :], c,
                     mask=m2)
        tl.store(y_ptr + (t64 * B + rows[:, None]) * D * H + d * H + cols[None, :],
                 tl.where(valid, h_new, 0.0), mask=m2)
        h_old = tl.load(h_rows + cols[None, :], mask=m2, other=0.0, cache_modifier=".cg")
        h_next = tl.where(valid, h_new, h_old.to(ACC))
        tl.store(hbuf_ptr + (((1 - cur) * D + d) * B + rows[:, None]) * H + cols[None, :],
                 h_next, mask=m2)
        if BARRIER:
            _group_barrier(bar_ptr + d * NB + pb, (s - s_begin + 1) * NH)

    tl.store(c_state_ptr + state, c, mask=m2)


def persistent_config(B: int, H: int, dtype: torch.dtype):
    """(BLOCK_B, BLOCK_H, BLOCK_K, num_warps, num_stages): 16 batch rows (the smallest tl.dot
    tile), 64 hidden units a program (32 for float32 / float64: their W chunks are twice the
    bytes), K chunks of 32; 8 warps and no software pipelining of the K loop: with 4 warps,
    3 stages or K chunks of 64 ptxas spills registers (tests/test_triton_aot.py). Not tuned on
    a GPU."""
    block_h = 64 if dtype in (torch.float16, torch.bfloat16) else 32
    return 16, min(block_h, dot_block(H)), min(32, dot_block(H)), 8, 1


def _dot_precision(dtype, target):
    """float32 on a GPU: "tf32x3" (as lstm_sequence._dot_args); "ieee" otherwise."""
    return "tf32x3" if dtype == torch.float32 and target is not None else "ieee"


def persistent_forward_config(B, H, dtype, has_len, peep, save, target):
    """The KernelConfig of lstm_persistent_forward_kernel on `target` (launch_config.py):
    with the grid-wide barrier on a GPU, without it under the interpreter (target None)."""
    block_b, block_h, block_k, num_warps, num_stages = persistent_config(B, H, dtype)
    return kernel_config(
        lstm_persistent_forward_kernel,
        dict(HAS_LEN=has_len, PEEP=peep, BARRIER=target is not None, SAVE=save,
             DOT_FP32=dtype == torch.bfloat16 and target is None,
             DOT_PRECISION=_dot_precision(dtype, target),
             BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k), num_warps, num_stages, dtype,
        pointers=dict(c_state_ptr=acc_dtype(dtype), len_ptr=torch.int64, bar_ptr=torch.int32),
        maxnreg=full_register_budget(num_warps))


def persistent_backward_config(B, H, dtype, has_len, peep, target):
    """The KernelConfig of lstm_persistent_backward_kernel (see persistent_forward_config)."""
    block_b, block_h, block_k, num_warps, num_stages = persistent_config(B, H, dtype)
    acc = acc_dtype(dtype)
    return kernel_config(
        lstm_persistent_backward_kernel,
        dict(HAS_LEN=has_len, PEEP=peep, BARRIER=target is not None,
             DOT_FP32=dtype == torch.bfloat16 and target is None,
             DOT_PRECISION=_dot_precision(dtype, target),
             BLOCK_B=block_b, BLOCK_H=block_h, BLOCK_K=block_k), num_warps, num_stages, dtype,
        pointers=dict(dh_state_ptr=acc, dc_state_ptr=acc, len_ptr=torch.int64,
                      bar_ptr=torch.int32), maxnreg=full_register_budget(num_warps))


def persistent_forward(gx, h0, c0, w_hh, w_peep, lengths, save=True, target=None):
    """Forward of one layer without projection; arguments and results as
    lstm_sequence.sequence_forward (w_hr must be None)."""
    T, B, D, G = gx.shape
    H = G // 4
    y = new_output((T, B, D * H), gx)
    gates = new_output((D, T, B, G), gx) if save else None
    cells = new_output((D, T, B, H), gx) if save else None
    cfg = persistent_forward_config(B, H, gx.dtype, lengths is not None, w_peep is not None,
                                    save, target)
    meta = cfg.meta()
    grid = (D, triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(H, meta["BLOCK_H"]))
    hbuf = torch.empty((2, D, B, H), dtype=gx.dtype, device=gx.device)
    hbuf[0] = h0
    c_state = c0.to(acc_dtype(gx.dtype)).contiguous().clone()
    bar = torch.zeros(D * grid[1], dtype=torch.int32, device=gx.device)
    dummy = c_state
    args = (gx, hbuf, c_state, w_hh, w_peep if w_peep is not None else dummy,
            lengths if lengths is not None else dummy, bar, y, gates if save else y,
            cells if save else y)
    if not meta["BARRIER"]:  # interpreter: programs run one after another, a launch per step
        for s in range(T):
            cfg.launch(grid, *args, s, s + 1, T, B, H)
    else:
        _check_resident(grid, gx.device)
        cfg.launch(grid, *args, 0, T, T, B, H)
    h_n = hbuf[T % 2].clone()
    return y, h_n, c_state.to(gx.dtype), gates, cells


@triton.jit
def lstm_persistent_backward_kernel(
        gy_ptr, dh_state_ptr, dc_state_ptr, c0_ptr, w_hh_ptr, peep_ptr, len_ptr, bar_ptr,
        gates_ptr, cells_ptr, dz_ptr,
        s_begin, s_end, T, B, H,
        HAS_LEN: tl.constexpr, PEEP: tl.constexpr, BARRIER: tl.constexpr,
        DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr):
    """Backward of forward steps s_begin - 1 down to s_end (s_begin > s_end; R = H).
    gy (T, B, D*H); dh_state, dc_state (D, B, H) accumulation dtype: gradients of r and c
    after the steps already processed (grad_h_n, grad_c_n at first); c0 (D, B, H);
    w_hh (D, G, H); gates (D, T, B, G), cells (D, T, B, H) saved by the forward.
    Writes dZ (T, B, D, G) and updates dh_state, dc_state."""
    STORE_DT = gates_ptr.dtype.element_ty
    ACC = tl.float64 if STORE_DT == tl.float64 else tl.float32
    DOT_DT = tl.float32 if DOT_FP32 else STORE_DT
    d = tl.program_id(0)
    pb = tl.program_id(1)
    D = tl.num_programs(0)
    NB = tl.num_programs(1)
    NH = tl.num_programs(2)
    G = 4 * H
    rows = pb * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(2) * BLOCK_H + tl.arange(0, BLOCK_H)
    kk = tl.arange(0, BLOCK_K)
    rmask, cmask = rows < B, cols < H
    m2 = rmask[:, None] & cmask[None, :]
    w_ci, w_cf, w_co = load_peephole(peep_ptr + d * 3 * H, cols, cmask, H, ACC, PEEP)
    state = (d * B + rows[:, None]) * H + cols[None, :]
    dh = tl.load(dh_state_ptr + state, mask=m2, other=0.0)
    dc = tl.load(dc_state_ptr + state, mask=m2, other=0.0)
    c_first = tl.load(c0_ptr + state, mask=m2, other=0.0).to(ACC)
    if HAS_LEN:
        lens = tl.load(len_ptr + rows, mask=rmask, other=0)
    else:
        lens = tl.full([BLOCK_B], T, tl.int64)
    w_base = w_hh_ptr + d * G * H

    for sb in range(s_end, s_begin):
        s = s_begin - 1 - (sb - s_end)  # forward step index, last to first
        t = s + d * (T - 1 - 2 * s)
        valid = (t < lens)[:, None]
        t64 = t.to(tl.int64)
        if s < T - 1:  # dh from the dz of forward step s + 1 (time t_next), all 4H columns
            t_next = (t + 1 - 2 * d).to(tl.int64)
            dh_new = tl.zeros([BLOCK_B, BLOCK_H], ACC)
            dz_rows = dz_ptr + ((t_next * B + rows[:, None]) * D + d) * G
            for k0 in range(0, G, BLOCK_K):
                ks = k0 + kk
                kmask = ks < G
                dz_k = tl.load(dz_rows + ks[None, :], mask=rmask[:, None] & kmask[None, :],
                               other=0.0, cache_modifier=".cg").to(DOT_DT)
                w_k = tl.load(w_base + ks[:, None] * H + cols[None, :],
                              mask=kmask[:, None] & cmask[None, :], other=0.0).to(DOT_DT)
                dh_new += tl.dot(dz_k, w_k, input_precision=DOT_PRECISION, out_dtype=ACC)
            dh = tl.where((t_next < lens)[:, None], dh_new, dh)
        gy = tl.load(gy_ptr + (t64 * B + rows[:, None]) * D * H + d * H + cols[None, :],
                     mask=m2, other=0.0).to(ACC)
        dr = tl.where(valid, gy + dh, 0.0)
        g_row = gates_ptr + ((d * T + t64) * B + rows[:, None]) * G + cols[None, :]
        i = tl.load(g_row, mask=m2, other=0.0).to(ACC)
        f = tl.load(g_row + H, mask=m2, other=0.0).to(ACC)
        g = tl.load(g_row + 2 * H, mask=m2, other=0.0).to(ACC)
        o = tl.load(g_row + 3 * H, mask=m2, other=0.0).to(ACC)
        c = tl.load(cells_ptr + ((d * T + t64) * B + rows[:, None]) * H + cols[None, :],
                    mask=m2, other=0.0).to(ACC)
        t_prev = (t - 1 + 2 * d).to(tl.int64)
        c_prev = tl.load(cells_ptr + ((d * T + t_prev) * B + rows[:, None]) * H + cols[None, :],
                         mask=m2 & (s > 0), other=0.0).to(ACC)
        c_prev = tl.where(s > 0, c_prev, c_first)
        dz_i, dz_f, dz_g, dz_o, dc_prev = cell_backward(i, f, g, o, c, c_prev, dr, dc,
                                                        w_ci, w_cf, w_co, PEEP)
        dz_row = dz_ptr + ((t64 * B + rows[:, None]) * D + d) * G + cols[None, :]
        tl.store(dz_row, tl.where(valid, dz_i, 0.0), mask=m2)
        tl.store(dz_row + H, tl.where(valid, dz_f, 0.0), mask=m2)
        tl.store(dz_row + 2 * H, tl.where(valid, dz_g, 0.0), mask=m2)
        tl.store(dz_row + 3 * H, tl.where(valid, dz_o, 0.0), mask=m2)
        dc = tl.where(valid, dc_prev, dc)
        if BARRIER:
            _group_barrier(bar_ptr + d * NB + pb, (sb - s_end + 1) * NH)

    tl.store(dh_state_ptr + state, dh, mask=m2)
    tl.store(dc_state_ptr + state, dc, mask=m2)


def _check_resident(grid, device):
    programs = grid[0] * grid[1] * grid[2]
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if programs > sms:
        raise RuntimeError(f"lstm_fused (triton): the persistent kernel needs all {programs} "
                           f"programs resident at once but the GPU has {sms} SMs")


def persistent_backward(grad_y, grad_h_n, grad_c_n, c0, w_hh, w_peep, lengths, gates, cells,
                        target=None):
    """Backward of one layer without projection; arguments and results as
    lstm_sequence.sequence_backward (w_hr None, so dR is None)."""
    D, T, B, G = gates.shape
    H = G // 4
    dZ = new_output((T, B, D, G), gates)
    cfg = persistent_backward_config(B, H, gates.dtype, lengths is not None,
                                     w_peep is not None, target)
    meta = cfg.meta()
    grid = (D, triton.cdiv(B, meta["BLOCK_B"]), triton.cdiv(H, meta["BLOCK_H"]))
    acc = acc_dtype(gates.dtype)
    dh_state = grad_h_n.to(acc).contiguous().clone()
    dc_state = grad_c_n.to(acc).contiguous().clone()
    bar = torch.zeros(D * grid[1], dtype=torch.int32, device=gates.device)
    dummy = dc_state
    args = (grad_y, dh_state, dc_state, c0, w_hh, w_peep if w_peep is not None else dummy,
            lengths if lengths is not None else dummy, bar, gates, cells, dZ)
    if not meta["BARRIER"]:  # interpreter: one launch per step (see the module docstring)
        for s in range(T - 1, -1, -1):
            cfg.launch(grid, *args, s + 1, s, T, B, H)
    else:
        _check_resident(grid, gates.device)
        cfg.launch(grid, *args, T, 0, T, B, H)
    # The gradient of h0 is the last exchange: dz of forward step 0 times W_hh, where valid.
    t0 = torch.tensor([0, T - 1][:D], device=gates.device)
    dz0 = dZ[t0, :, torch.arange(D, device=gates.device)].to(acc)  # (D, B, G)
    dh0 = torch.bmm(dz0, w_hh.to(acc))  # (D, B, H)
    if lengths is not None:
        started = (lengths.unsqueeze(0) > t0.unsqueeze(1)).unsqueeze(2)  # (D, B, 1)
        dh0 = torch.where(started, dh0, dh_state)
    return dZ, None, dh0.to(gates.dtype), dc_state.to(gates.dtype)
