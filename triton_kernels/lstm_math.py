"""Element-wise LSTM cell math shared by the Triton kernels (gate order i, f, g, o).

All arguments are blocks in the accumulation dtype (float32, or float64 for float64 inputs).
Per element, with peephole weights w_ci, w_cf, w_co (docs/contract.md, section 1):

    i = sigmoid(z_i + w_ci c_prev)   f = sigmoid(z_f + w_cf c_prev)   g = tanh(z_g)
    c = f c_prev + i g               o = sigmoid(z_o + w_co c)         h = o tanh(c)
"""

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    # exp of a non-positive number only: never overflows, so never inf / inf = NaN.
    e = tl.exp(-tl.abs(x))
    s = 1.0 / (1.0 + e)
    return tl.where(x >= 0, s, e * s)


@triton.jit
def tanh(x):
    # tanh(|x|) = (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1]: saturates cleanly to +-1.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def cell_forward(z_i, z_f, z_g, z_o, c_prev, w_ci, w_cf, w_co, PEEP: tl.constexpr):
    """Pre-activations (BLOCK_B, BLOCK_H) and c_prev -> (i, f, g, o, c, h).
    w_c* are (BLOCK_H,) rows, ignored when PEEP is False."""
    if PEEP:
        z_i = z_i + w_ci[None, :] * c_prev
        z_f = z_f + w_cf[None, :] * c_prev
    i = sigmoid(z_i)
    f = sigmoid(z_f)
    g = tanh(z_g)
    c = f * c_prev + i * g
    if PEEP:
        z_o = z_o + w_co[None, :] * c
    o = sigmoid(z_o)
    h = o * tanh(c)
    return i, f, g, o, c, h


@triton.jit
def cell_backward(i, f, g, o, c, c_prev, dh, dc, w_ci, w_cf, w_co, PEEP: tl.constexpr):
    """Backward of cell_forward. dh: gradient of h = o tanh(c) (before any projection);
    dc: gradient of c from later steps. Returns (dz_i, dz_f, dz_g, dz_o, dc_prev), where dz are
    the gradients of the pre-activations (the peephole terms get the same dz)."""
    tc = tanh(c)
    dz_o = dh * tc * o * (1.0 - o)
    dct = dc + dh * o * (1.0 - tc * tc)
    if PEEP:
        dct = dct + dz_o * w_co[None, :]
    dz_i = dct * g * i * (1.0 - i)
    dz_f = dct * c_prev * f * (1.0 - f)
    dz_g = dct * i * (1.0 - g * g)
    dc_prev = dct * f
    if PEEP:
        dc_prev = dc_prev + dz_i * w_ci[None, :] + dz_f * w_cf[None, :]
    return dz_i, dz_f, dz_g, dz_o, dc_prev


@triton.jit
def load_peephole(peep_ptr, cols, cmask, H, ACC: tl.constexpr, PEEP: tl.constexpr):
    """Rows w_ci, w_cf, w_co (columns `cols`) of one direction's (3, H) peephole weights;
    zeros (never read) without peepholes."""
    w_ci = tl.zeros(cols.shape, ACC)
    w_cf = tl.zeros(cols.shape, ACC)
    w_co = tl.zeros(cols.shape, ACC)
    if PEEP:
        w_ci = tl.load(peep_ptr + cols, mask=cmask, other=0.0).to(ACC)
        w_cf = tl.load(peep_ptr + H + cols, mask=cmask, other=0.0).to(ACC)
        w_co = tl.load(peep_ptr + 2 * H + cols, mask=cmask, other=0.0).to(ACC)
    return w_ci, w_cf, w_co
