"""Fused-sequence LSTM kernels: one launch runs the whole time loop of a layer.

Grid (D, cdiv(B, BLOCK_B)): one program per direction and block of batch rows, so both
directions of a bidirectional layer run in the same launch. Each program loads its
direction's W_hh (as 4 gate tiles) and W_hr once and keeps them on chip for all T steps
(the compiler stages them in shared memory), and carries h and c in registers: per step it
reads only the precomputed input projection gx[t] and writes y[t], the gates and the cell
(saved for the backward). The recurrent product r_{t-1} W_hh^T is a tl.dot per gate; the
gate math is fused behind it.

Which shapes (tuning.choose_path): T > 1 and the weights of one direction must fit one
program's shared memory and registers on the GPU at hand (tuning.SEQUENCE_MAX_WEIGHT_ELEMENTS,
per target, as tests/test_triton_aot.py measures: at most H, R = 128 for float16 / bfloat16,
64 for float32, 32 for float64, less on some GPUs). Larger layers would need W_hh split over several
programs (SMs) with a barrier every step, which Triton cannot express safely (its
interpreter runs programs one after another): these layers take the step path of lstm_cell.py.
Peephole, proj_size, lengths and resets are all handled here, no fallback for them. Resets
(csrc/lstm_layer_args.h): the flag of step t's boundary is resets[t + d] (direction 1 crosses
the boundary between t + 1 and t before step t); where it is set (and t + d < lengths[b]) the
row's h and c are replaced by h0, c0, which the program keeps in registers. The backward adds
the gradient reaching such a step's (h, c) to grad_h0, grad_c0 and carries zero instead.

The backward kernel runs the reverse time loop the same way (W_hh, W_hr on chip, dh and dc in
registers) and writes dZ, the gradient of the pre-activations of every step, and dR, the
gradient of every projected output; the weight gradients are GEMMs over all steps afterwards
(lstm_layer.weight_gradients).

Numerics: tl.dot operands are in the input dtype (h rounded to it, as cuDNN does), products
accumulate in float32 (float64 for float64 inputs); float32 dots on a GPU use input_precision
"tf32x3" (three TF32 products: about float32's accuracy, never plain TF32) so the results match
the float64 reference as tightly as float32 allows. Under the
interpreter, bfloat16 operands are rounded to bfloat16 and multiplied in float32 (the
interpreter cannot multiply bfloat16), which is the same arithmetic.
"""

import torch
import triton
import triton.language as tl

from . import interpreter_compat
from .launch_config import kernel_config
from .lstm_math import cell_backward, cell_forward, load_peephole, tanh
from .tuning import acc_dtype, dot_block, new_output, sequence_config

# The time loops below have a runtime bound, which the interpreter mishandles under NumPy 2.4.
interpreter_compat.apply()


@triton.jit
def _dot_operand(x, STORE_DT: tl.constexpr, DOT_FP32: tl.constexpr):
    """x rounded to the storage dtype, as the operand of a tl.dot."""
    x = x.to(STORE_DT)
    if DOT_FP32:
        x = x.to(tl.float32)
    return x


@triton.jit
def _starts_fresh(rs_ptr, rows, rmask, lens, t, d, T, B):
    """(BLOCK_B, 1): the rows that start step t of direction d from (h0, c0): the flag of the
    boundary crossed before step t, resets[t + d], set at a step before the row's length
    (t + d > 0: resets[0] of direction 0 changes nothing)."""
    tf = t + d
    ok = (tf > 0) & (tf < T)
    flag = tl.load(rs_ptr + tf.to(tl.int64) * B + rows, mask=rmask & ok & (tf < lens), other=0)
    return (flag != 0)[:, None]


@triton.jit
def lstm_sequence_forward_kernel(
    gx_ptr,
    h0_ptr,
    c0_ptr,
    w_hh_ptr,
    w_hr_ptr,
    peep_ptr,
    len_ptr,
    rs_ptr,
    y_ptr,
    h_n_ptr,
    c_n_ptr,
    gates_ptr,
    cells_ptr,
    pw_ptr,
    pb_ptr,
    v_ptr,
    q_ptr,
    scores_ptr,
    ctx_ptr,
    lse_ptr,
    T,
    B,
    H,
    R,
    A,
    HAS_LEN: tl.constexpr,
    PEEP: tl.constexpr,
    PROJ: tl.constexpr,
    SAVE: tl.constexpr,
    WRITE_Y: tl.constexpr,
    POOL: tl.constexpr,
    HAS_PB: tl.constexpr,
    HAS_Q: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    """gx (T, B, D, G) input projections plus bias; h0 (D, B, R); c0 (D, B, H);
    w_hh (D, G, R); w_hr (D, R, H) when PROJ (R = P); peep (D, 3, H); lengths (B,);
    resets (T, B) uint8 when HAS_RESETS.
    Writes y (T, B, D*R) when WRITE_Y, h_n (D, B, R), c_n (D, B, H), and when SAVE (for the
    backward) gates (D, T, B, G) and cells (D, T, B, H).
    POOL (D = 1; the attentive LSTM's last layer): additive attention pooling of the outputs
    in the same loop, with an online softmax: pw (A, R) = W_h, pb (A,) = b (HAS_PB),
    v (A,), q (B, A) the projected query (HAS_Q). Per step e_t = v . tanh(W_h r_t + b + q)
    (r_t rounded to the storage dtype, as y holds it), the running max m, sum l and
    unnormalised context; writes the raw scores (B, T) at valid steps only, the context
    (B, R) and lse (B,) = m + log l (-inf for a row without a valid step)."""
    STORE_DT = gx_ptr.dtype.element_ty
    ACC = tl.float64 if STORE_DT == tl.float64 else tl.float32
    DOT_DT = tl.float32 if DOT_FP32 else STORE_DT
    d = tl.program_id(0)
    D = tl.num_programs(0)
    G = 4 * H
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    jh = tl.arange(0, BLOCK_H)
    kr = tl.arange(0, BLOCK_R)
    rmask, hmask, kmask = rows < B, jh < H, kr < R
    m_bh = rmask[:, None] & hmask[None, :]
    m_br = rmask[:, None] & kmask[None, :]

    # On chip for the whole loop: W_hh^T per gate (BLOCK_R, BLOCK_H), W_hr^T (BLOCK_H, BLOCK_R).
    w_base = w_hh_ptr + d * G * R
    w_i = tl.load(
        w_base + (0 * H + jh[None, :]) * R + kr[:, None],
        mask=kmask[:, None] & hmask[None, :],
        other=0.0,
    ).to(DOT_DT)
    w_f = tl.load(
        w_base + (1 * H + jh[None, :]) * R + kr[:, None],
        mask=kmask[:, None] & hmask[None, :],
        other=0.0,
    ).to(DOT_DT)
    w_g = tl.load(
        w_base + (2 * H + jh[None, :]) * R + kr[:, None],
        mask=kmask[:, None] & hmask[None, :],
        other=0.0,
    ).to(DOT_DT)
    w_o = tl.load(
        w_base + (3 * H + jh[None, :]) * R + kr[:, None],
        mask=kmask[:, None] & hmask[None, :],
        other=0.0,
    ).to(DOT_DT)
    if PROJ:
        w_r = tl.load(
            w_hr_ptr + d * R * H + kr[None, :] * H + jh[:, None],
            mask=hmask[:, None] & kmask[None, :],
            other=0.0,
        ).to(DOT_DT)
    w_ci, w_cf, w_co = load_peephole(peep_ptr + d * 3 * H, jh, hmask, H, ACC, PEEP)

    h = tl.load(h0_ptr + (d * B + rows[:, None]) * R + kr[None, :], mask=m_br, other=0.0).to(
        ACC
    )  # (BLOCK_B, BLOCK_R): r_{t-1}
    c = tl.load(c0_ptr + (d * B + rows[:, None]) * H + jh[None, :], mask=m_bh, other=0.0).to(
        ACC
    )  # (BLOCK_B, BLOCK_H)
    if HAS_LEN:
        lens = tl.load(len_ptr + rows, mask=rmask, other=0)
    else:
        lens = tl.full([BLOCK_B], T, tl.int64)
    if HAS_RESETS:
        h_init = h
        c_init = c

    if POOL:  # W_h^T (BLOCK_R, BLOCK_A) on chip too, b + q and v in registers
        ka = tl.arange(0, BLOCK_A)
        amask = ka < A
        w_a = tl.load(
            pw_ptr + ka[None, :] * R + kr[:, None], mask=kmask[:, None] & amask[None, :], other=0.0
        ).to(DOT_DT)
        u = tl.zeros([BLOCK_B, BLOCK_A], ACC)
        if HAS_PB:
            u += tl.load(pb_ptr + ka, mask=amask, other=0.0).to(ACC)[None, :]
        if HAS_Q:
            u += tl.load(
                q_ptr + rows[:, None] * A + ka[None, :],
                mask=rmask[:, None] & amask[None, :],
                other=0.0,
            ).to(ACC)
        v_a = tl.load(v_ptr + ka, mask=amask, other=0.0).to(ACC)
        run_max = tl.full([BLOCK_B], float("-inf"), ACC)
        run_sum = tl.zeros([BLOCK_B], ACC)
        context = tl.zeros([BLOCK_B, BLOCK_R], ACC)

    for s in range(0, T):
        t = s + d * (T - 1 - 2 * s)  # direction 1 runs backwards in time
        valid = (t < lens)[:, None]
        t64 = t.to(tl.int64)
        if HAS_RESETS:
            fresh = _starts_fresh(rs_ptr, rows, rmask, lens, t, d, T, B)
            h = tl.where(fresh, h_init, h)
            c = tl.where(fresh, c_init, c)
        gx_row = gx_ptr + ((t64 * B + rows[:, None]) * D + d) * G + jh[None, :]
        r_prev = _dot_operand(h, STORE_DT, DOT_FP32)
        z_i = tl.load(gx_row, mask=m_bh, other=0.0).to(ACC) + tl.dot(
            r_prev, w_i, input_precision=DOT_PRECISION, out_dtype=ACC
        )
        z_f = tl.load(gx_row + H, mask=m_bh, other=0.0).to(ACC) + tl.dot(
            r_prev, w_f, input_precision=DOT_PRECISION, out_dtype=ACC
        )
        z_g = tl.load(gx_row + 2 * H, mask=m_bh, other=0.0).to(ACC) + tl.dot(
            r_prev, w_g, input_precision=DOT_PRECISION, out_dtype=ACC
        )
        z_o = tl.load(gx_row + 3 * H, mask=m_bh, other=0.0).to(ACC) + tl.dot(
            r_prev, w_o, input_precision=DOT_PRECISION, out_dtype=ACC
        )
        i, f, g, o, c_new, h_new = cell_forward(z_i, z_f, z_g, z_o, c, w_ci, w_cf, w_co, PEEP)
        if PROJ:
            r_new = tl.dot(
                _dot_operand(h_new, STORE_DT, DOT_FP32),
                w_r,
                input_precision=DOT_PRECISION,
                out_dtype=ACC,
            )
        else:
            r_new = h_new  # BLOCK_R == BLOCK_H
        # Padded steps (t >= lengths[b]): gates zero, cell and state carried, output zero.
        c = tl.where(valid, c_new, c)
        if SAVE:
            g_row = gates_ptr + ((d * T + t64) * B + rows[:, None]) * G + jh[None, :]
            tl.store(g_row, tl.where(valid, i, 0.0), mask=m_bh)
            tl.store(g_row + H, tl.where(valid, f, 0.0), mask=m_bh)
            tl.store(g_row + 2 * H, tl.where(valid, g, 0.0), mask=m_bh)
            tl.store(g_row + 3 * H, tl.where(valid, o, 0.0), mask=m_bh)
            tl.store(
                cells_ptr + ((d * T + t64) * B + rows[:, None]) * H + jh[None, :], c, mask=m_bh
            )
        if WRITE_Y:
            tl.store(
                y_ptr + (t64 * B + rows[:, None]) * D * R + d * R + kr[None, :],
                tl.where(valid, r_new, 0.0),
                mask=m_br,
            )
        if POOL:
            r_out = _dot_operand(r_new, STORE_DT, DOT_FP32)
            e = tl.sum(
                tanh(tl.dot(r_out, w_a, input_precision=DOT_PRECISION, out_dtype=ACC) + u)
                * v_a[None, :],
                axis=1,
            )  # (BLOCK_B,)
            step_ok = t < lens
            tl.store(scores_ptr + rows * T + t64, e, mask=rmask & step_ok)
            new_max = tl.where(step_ok, tl.maximum(run_max, e), run_max)
            # exp(-inf - finite) = 0 on a row's first valid step; rows without one stay -inf
            # and must not compute exp(-inf + inf).
            no_step = new_max == float("-inf")
            rescale = tl.where(no_step, 1.0, tl.exp(run_max - tl.where(no_step, 0.0, new_max)))
            weight = tl.where(step_ok, tl.exp(e - new_max), 0.0)
            # (where, not weight * r: a padded step's r may be NaN, from NaN padding in x)
            context = context * rescale[:, None] + tl.where(
                step_ok[:, None], weight[:, None] * r_out.to(ACC), 0.0
            )
            run_sum = run_sum * rescale + weight
            run_max = new_max
        h = tl.where(valid, r_new, h)

    tl.store(h_n_ptr + (d * B + rows[:, None]) * R + kr[None, :], h, mask=m_br)
    tl.store(c_n_ptr + (d * B + rows[:, None]) * H + jh[None, :], c, mask=m_bh)
    if POOL:
        has_step = run_sum > 0
        inv = tl.where(has_step, 1.0 / tl.where(has_step, run_sum, 1.0), 0.0)
        tl.store(ctx_ptr + rows[:, None] * R + kr[None, :], context * inv[:, None], mask=m_br)
        tl.store(
            lse_ptr + rows,
            tl.where(has_step, run_max + tl.log(tl.where(has_step, run_sum, 1.0)), float("-inf")),
            mask=rmask,
        )


@triton.jit
def lstm_sequence_backward_kernel(
    gy_ptr,
    dh_n_ptr,
    dc_n_ptr,
    c0_ptr,
    w_hh_ptr,
    w_hr_ptr,
    peep_ptr,
    len_ptr,
    rs_ptr,
    gates_ptr,
    cells_ptr,
    dz_ptr,
    dr_ptr,
    dh0_ptr,
    dc0_ptr,
    T,
    B,
    H,
    R,
    HAS_LEN: tl.constexpr,
    PEEP: tl.constexpr,
    PROJ: tl.constexpr,
    HAS_RESETS: tl.constexpr,
    DOT_FP32: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    """Reverse time loop. gy (T, B, D*R), dh_n (D, B, R), dc_n (D, B, H): incoming gradients;
    c0 (D, B, H); w_hh (D, G, R); w_hr (D, R, H); peep (D, 3, H); gates (D, T, B, G) and
    cells (D, T, B, H) saved by the forward. Writes dZ (T, B, D, G), dR (D, T, B, R) when
    PROJ, grad_h0 (D, B, R), grad_c0 (D, B, H)."""
    STORE_DT = gates_ptr.dtype.element_ty
    ACC = tl.float64 if STORE_DT == tl.float64 else tl.float32
    DOT_DT = tl.float32 if DOT_FP32 else STORE_DT
    d = tl.program_id(0)
    D = tl.num_programs(0)
    G = 4 * H
    rows = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    jh = tl.arange(0, BLOCK_H)
    kr = tl.arange(0, BLOCK_R)
    rmask, hmask, kmask = rows < B, jh < H, kr < R
    m_bh = rmask[:, None] & hmask[None, :]
    m_br = rmask[:, None] & kmask[None, :]
    m_hr = hmask[:, None] & kmask[None, :]

    # On chip: W_hh per gate (BLOCK_H, BLOCK_R) for dh = sum dz_gate W_gate; W_hr (BLOCK_R,
    # BLOCK_H) for the gradient through the projection.
    w_base = w_hh_ptr + d * G * R
    w_i = tl.load(w_base + (0 * H + jh[:, None]) * R + kr[None, :], mask=m_hr, other=0.0).to(DOT_DT)
    w_f = tl.load(w_base + (1 * H + jh[:, None]) * R + kr[None, :], mask=m_hr, other=0.0).to(DOT_DT)
    w_g = tl.load(w_base + (2 * H + jh[:, None]) * R + kr[None, :], mask=m_hr, other=0.0).to(DOT_DT)
    w_o = tl.load(w_base + (3 * H + jh[:, None]) * R + kr[None, :], mask=m_hr, other=0.0).to(DOT_DT)
    if PROJ:
        w_r = tl.load(
            w_hr_ptr + d * R * H + kr[:, None] * H + jh[None, :],
            mask=kmask[:, None] & hmask[None, :],
            other=0.0,
        ).to(DOT_DT)
    w_ci, w_cf, w_co = load_peephole(peep_ptr + d * 3 * H, jh, hmask, H, ACC, PEEP)

    dh = tl.load(dh_n_ptr + (d * B + rows[:, None]) * R + kr[None, :], mask=m_br, other=0.0).to(
        ACC
    )  # gradient of r at the current step from later steps
    dc = tl.load(dc_n_ptr + (d * B + rows[:, None]) * H + jh[None, :], mask=m_bh, other=0.0).to(ACC)
    c_first = tl.load(c0_ptr + (d * B + rows[:, None]) * H + jh[None, :], mask=m_bh, other=0.0).to(
        ACC
    )
    if HAS_LEN:
        lens = tl.load(len_ptr + rows, mask=rmask, other=0)
    else:
        lens = tl.full([BLOCK_B], T, tl.int64)
    if HAS_RESETS:  # the gradients of the steps that started from (h0, c0), summed
        dh0_sum = tl.zeros([BLOCK_B, BLOCK_R], ACC)
        dc0_sum = tl.zeros([BLOCK_B, BLOCK_H], ACC)

    for sb in range(0, T):
        s = T - 1 - sb  # forward step index, processed last to first
        t = s + d * (T - 1 - 2 * s)
        t_prev = t - 1 + 2 * d  # the time of the forward step before s
        valid = (t < lens)[:, None]
        t64 = t.to(tl.int64)
        gy = tl.load(
            gy_ptr + (t64 * B + rows[:, None]) * D * R + d * R + kr[None, :], mask=m_br, other=0.0
        ).to(ACC)
        dr = tl.where(valid, gy + dh, 0.0)  # (BLOCK_B, BLOCK_R)
        if PROJ:
            tl.store(dr_ptr + ((d * T + t64) * B + rows[:, None]) * R + kr[None, :], dr, mask=m_br)
            dhpre = tl.dot(
                _dot_operand(dr, STORE_DT, DOT_FP32),
                w_r,
                input_precision=DOT_PRECISION,
                out_dtype=ACC,
            )
        else:
            dhpre = dr
        g_row = gates_ptr + ((d * T + t64) * B + rows[:, None]) * G + jh[None, :]
        i = tl.load(g_row, mask=m_bh, other=0.0).to(ACC)
        f = tl.load(g_row + H, mask=m_bh, other=0.0).to(ACC)
        g = tl.load(g_row + 2 * H, mask=m_bh, other=0.0).to(ACC)
        o = tl.load(g_row + 3 * H, mask=m_bh, other=0.0).to(ACC)
        c = tl.load(
            cells_ptr + ((d * T + t64) * B + rows[:, None]) * H + jh[None, :], mask=m_bh, other=0.0
        ).to(ACC)
        c_prev = tl.load(
            cells_ptr + ((d * T + t_prev.to(tl.int64)) * B + rows[:, None]) * H + jh[None, :],
            mask=m_bh & (s > 0),
            other=0.0,
        ).to(ACC)
        c_prev = tl.where(s > 0, c_prev, c_first)
        if HAS_RESETS:
            fresh = _starts_fresh(rs_ptr, rows, rmask, lens, t, d, T, B)
            c_prev = tl.where(fresh, c_first, c_prev)
        dz_i, dz_f, dz_g, dz_o, dc_prev = cell_backward(
            i, f, g, o, c, c_prev, dhpre, dc, w_ci, w_cf, w_co, PEEP
        )
        dz_i = tl.where(valid, dz_i, 0.0)
        dz_f = tl.where(valid, dz_f, 0.0)
        dz_g = tl.where(valid, dz_g, 0.0)
        dz_o = tl.where(valid, dz_o, 0.0)
        dz_row = dz_ptr + ((t64 * B + rows[:, None]) * D + d) * G + jh[None, :]
        tl.store(dz_row, dz_i, mask=m_bh)
        tl.store(dz_row + H, dz_f, mask=m_bh)
        tl.store(dz_row + 2 * H, dz_g, mask=m_bh)
        tl.store(dz_row + 3 * H, dz_o, mask=m_bh)
        dc = tl.where(valid, dc_prev, dc)
        dh_new = tl.dot(
            _dot_operand(dz_i, STORE_DT, DOT_FP32),
            w_i,
            input_precision=DOT_PRECISION,
            out_dtype=ACC,
        )
        dh_new += tl.dot(
            _dot_operand(dz_f, STORE_DT, DOT_FP32),
            w_f,
            input_precision=DOT_PRECISION,
            out_dtype=ACC,
        )
        dh_new += tl.dot(
            _dot_operand(dz_g, STORE_DT, DOT_FP32),
            w_g,
            input_precision=DOT_PRECISION,
            out_dtype=ACC,
        )
        dh_new += tl.dot(
            _dot_operand(dz_o, STORE_DT, DOT_FP32),
            w_o,
            input_precision=DOT_PRECISION,
            out_dtype=ACC,
        )
        dh = tl.where(valid, dh_new, dh)
        if HAS_RESETS:  # no gradient crosses a reset: it belongs to h0, c0
            dh0_sum += tl.where(fresh, dh, 0.0)
            dc0_sum += tl.where(fresh, dc, 0.0)
            dh = tl.where(fresh, 0.0, dh)
            dc = tl.where(fresh, 0.0, dc)

    if HAS_RESETS:
        dh += dh0_sum
        dc += dc0_sum
    tl.store(dh0_ptr + (d * B + rows[:, None]) * R + kr[None, :], dh, mask=m_br)
    tl.store(dc0_ptr + (d * B + rows[:, None]) * H + jh[None, :], dc, mask=m_bh)


def _dot_args(dtype, target=None):
    """(DOT_FP32, DOT_PRECISION) for inputs of `dtype` on `target` (None: the interpreter).
    float32 on a GPU: "tf32x3", three TF32 tensor-core products per product, about as
    accurate as float32 FMAs (its "ieee" FMA path spills registers, tests/test_triton_aot.py);
    "ieee" otherwise (the interpreter computes in float32 or float64 whatever is asked)."""
    dot_fp32 = dtype == torch.bfloat16 and target is None
    precision = "tf32x3" if dtype == torch.float32 and target is not None else "ieee"
    return dot_fp32, precision


def sequence_forward_config(
    B,
    H,
    R,
    A,
    dtype,
    has_len,
    peep,
    proj,
    save,
    write_y,
    pool,
    has_pb,
    has_q,
    target,
    has_resets=False,
):
    """The KernelConfig of lstm_sequence_forward_kernel for one layer call on `target`
    (launch_config.py); A = 0 without pooling. Which sizes may take this kernel at all:
    tuning.sequence_fits."""
    block_b, block_h, block_r, num_warps, num_stages = sequence_config(B, H, R, dtype, target)
    dot_fp32, precision = _dot_args(dtype, target)
    acc = acc_dtype(dtype)
    return kernel_config(
        lstm_sequence_forward_kernel,
        dict(
            HAS_LEN=has_len,
            PEEP=peep,
            PROJ=proj,
            SAVE=save,
            WRITE_Y=write_y,
            POOL=pool,
            HAS_PB=has_pb,
            HAS_Q=has_q,
            HAS_RESETS=has_resets,
            DOT_FP32=dot_fp32,
            DOT_PRECISION=precision,
            BLOCK_B=block_b,
            BLOCK_H=block_h,
            BLOCK_R=block_r,
            BLOCK_A=dot_block(A),
        ),
        num_warps,
        num_stages,
        dtype,
        pointers=dict(len_ptr=torch.int64, rs_ptr=torch.uint8, scores_ptr=acc, lse_ptr=acc),
    )


def sequence_backward_config(B, H, R, dtype, has_len, peep, proj, target, has_resets=False):
    """The KernelConfig of lstm_sequence_backward_kernel (see sequence_forward_config)."""
    block_b, block_h, block_r, num_warps, num_stages = sequence_config(B, H, R, dtype, target)
    dot_fp32, precision = _dot_args(dtype, target)
    return kernel_config(
        lstm_sequence_backward_kernel,
        dict(
            HAS_LEN=has_len,
            PEEP=peep,
            PROJ=proj,
            HAS_RESETS=has_resets,
            DOT_FP32=dot_fp32,
            DOT_PRECISION=precision,
            BLOCK_B=block_b,
            BLOCK_H=block_h,
            BLOCK_R=block_r,
        ),
        num_warps,
        num_stages,
        dtype,
        pointers=dict(len_ptr=torch.int64, rs_ptr=torch.uint8),
    )


def _launch_forward(
    gx,
    h0,
    c0,
    w_hh,
    w_hr,
    w_peep,
    lengths,
    h_n,
    c_n,
    y=None,
    gates=None,
    cells=None,
    pool=None,
    target=None,
    resets=None,
):
    """One launch of lstm_sequence_forward_kernel. y None: not written; gates / cells None:
    nothing saved; pool None, or (proj_weight, proj_bias or None, v, qproj or None, scores,
    context, lse) for the pooled last layer (POOL); resets (T, B) bool or None."""
    T, B, D, G = gx.shape
    H, R = G // 4, h0.shape[2]
    dummy = h0  # for the pointers a call does not use

    def ptr(t):
        return dummy if t is None else t

    proj_weight, proj_bias, v, qproj, scores, context, lse = pool or (None,) * 7
    A = proj_weight.shape[0] if pool else 0
    cfg = sequence_forward_config(
        B,
        H,
        R,
        A,
        gx.dtype,
        has_len=lengths is not None,
        peep=w_peep is not None,
        proj=w_hr is not None,
        save=gates is not None,
        write_y=y is not None,
        pool=pool is not None,
        has_pb=proj_bias is not None,
        has_q=qproj is not None,
        target=target,
        has_resets=resets is not None,
    )
    cfg.launch(
        (D, triton.cdiv(B, cfg.meta()["BLOCK_B"])),
        gx,
        h0,
        c0,
        w_hh,
        ptr(w_hr),
        ptr(w_peep),
        ptr(lengths),
        _flags(resets, dummy),
        ptr(y),
        h_n,
        c_n,
        ptr(gates),
        ptr(cells),
        ptr(proj_weight),
        ptr(proj_bias),
        ptr(v),
        ptr(qproj),
        ptr(scores),
        ptr(context),
        ptr(lse),
        T,
        B,
        H,
        R,
        A,
    )


def _flags(resets, dummy):
    """resets (T, B) bool as the kernels read it (uint8, the same bytes), or a dummy pointer."""
    return dummy if resets is None else resets.view(torch.uint8)


def sequence_forward(gx, h0, c0, w_hh, w_hr, w_peep, lengths, save=True, target=None, resets=None):
    """Forward of one layer in one launch. Arguments and results as lstm_cell.step_forward:
    gx (T, B, D, G), h0 (D, B, R), c0 (D, B, H), w_hh (D, G, R), w_hr (D, P, H) or None,
    w_peep (D, 3, H) or None, lengths (B,) or None, resets (T, B) bool or None ->
    y (T, B, D*R), h_n (D, B, R), c_n (D, B, H), gates (D, T, B, G), cells (D, T, B, H)
    (gates and cells None when not `save`)."""
    T, B, D, G = gx.shape
    H, R = G // 4, h0.shape[2]
    y = new_output((T, B, D * R), gx)
    h_n = new_output((D, B, R), gx)
    c_n = new_output((D, B, H), gx)
    gates = new_output((D, T, B, G), gx) if save else None
    cells = new_output((D, T, B, H), gx) if save else None
    _launch_forward(
        gx,
        h0,
        c0,
        w_hh,
        w_hr,
        w_peep,
        lengths,
        h_n,
        c_n,
        y,
        gates,
        cells,
        target=target,
        resets=resets,
    )
    return y, h_n, c_n, gates, cells


def sequence_attentive_forward(
    gx, h0, c0, w_hh, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj, target=None
):
    """One direction's forward with its outputs pooled in the same launch (POOL), y not
    written. gx (T, B, 1, G) and the layer arguments as sequence_forward; proj_weight (A, R),
    proj_bias (A,) or None, v (A,), qproj (B, A) or None ->
    context (B, R), alpha (B, T), lse (B,), h_n (1, B, R), c_n (1, B, H)."""
    T, B, D, G = gx.shape
    H, R = G // 4, h0.shape[2]
    h_n = new_output((D, B, R), gx)
    c_n = new_output((D, B, H), gx)
    scores = new_output((B, T), gx, dtype=acc_dtype(gx.dtype))
    context = new_output((B, R), gx)
    lse = new_output((B,), gx, dtype=acc_dtype(gx.dtype))
    _launch_forward(
        gx,
        h0,
        c0,
        w_hh,
        w_hr,
        w_peep,
        lengths,
        h_n,
        c_n,
        pool=(proj_weight, proj_bias, v, qproj, scores, context, lse),
        target=target,
    )
    # alpha from the raw scores: positions never written (padding) are masked out here.
    steps = torch.arange(T, device=gx.device)
    valid = steps[None, :] < (lengths[:, None] if lengths is not None else T)
    alpha = torch.where(valid, torch.exp(scores - lse[:, None]), 0.0).to(gx.dtype)
    return context, alpha, lse.to(gx.dtype), h_n, c_n


def sequence_backward(
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
    """Reverse time loop of one layer in one launch (resets (T, B) bool or None). Returns
    dZ (T, B, D, G), dR (D, T, B, R) or None without a projection, grad_h0 (D, B, R),
    grad_c0 (D, B, H)."""
    D, T, B, G = gates.shape
    H, R = G // 4, grad_h_n.shape[2]
    proj = w_hr is not None
    dZ = new_output((T, B, D, G), gates)
    dR = new_output((D, T, B, R), gates) if proj else None
    grad_h0 = new_output((D, B, R), gates)
    grad_c0 = new_output((D, B, H), gates)
    cfg = sequence_backward_config(
        B,
        H,
        R,
        gates.dtype,
        lengths is not None,
        w_peep is not None,
        proj,
        target,
        has_resets=resets is not None,
    )
    dummy = c0
    cfg.launch(
        (D, triton.cdiv(B, cfg.meta()["BLOCK_B"])),
        grad_y,
        grad_h_n,
        grad_c_n,
        c0,
        w_hh,
        w_hr if proj else dummy,
        w_peep if w_peep is not None else dummy,
        lengths if lengths is not None else dummy,
        _flags(resets, dummy),
        gates,
        cells,
        dZ,
        dR if proj else dummy,
        grad_h0,
        grad_c0,
        T,
        B,
        H,
        R,
    )
    return dZ, dR, grad_h0, grad_c0
