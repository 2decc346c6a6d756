"""The Triton LSTM layer: launchers of one layer call, forward, backward and the attentive
LSTM's pooled last layer. Plain functions of tensors; lstm_fused/ops/lstm_layer.py registers
them as the operators lstm_fused::lstm_layer_forward_triton / _inference_triton /
_backward_triton / attentive_lstm_inference_triton, after the C++ argument checks.

Same saved-tensor layout as the C++ kernels (csrc/lstm_layer_args.h): gates (D, T, B, G)
activated, zero at padded steps; cells (D, T, B, H) carried through padded steps, so one
autograd formula serves every backend.

One layer call:
  1. gx = x W_ih^T + bias for every step and direction: one GEMM (T*B, I) x (I, D*G).
  2. the recurrence: the fused-sequence kernel (lstm_sequence.py, one launch for the layer)
     or the step path (lstm_cell.py), by tuning.choose_path.
Backward: the reverse recurrence by the same path gives dZ (the gradient of the
pre-activations) and dR (of the projected outputs); then weight_gradients does one GEMM per
weight over all steps.
"""

from typing import Optional

import torch
from torch import Tensor

from .launch_config import device_target
from .lstm_cell import (
    gate_backward_config,
    gate_forward_config,
    reset_before,
    step_backward,
    step_forward,
)
from .lstm_sequence import (
    sequence_attentive_forward,
    sequence_backward,
    sequence_backward_config,
    sequence_forward,
    sequence_forward_config,
)
from .tuning import attentive_fits, choose_path


def layer_sizes(x: Tensor, h0: Tensor, w_ih: Tensor, w_hr: Optional[Tensor]):
    """(T, B, I, H, P, R, G, D) of a layer call whose arguments the caller has checked
    (lstm_fused/ops/lstm_layer.py runs the C++ checks, csrc/lstm_layer_args.h, first)."""
    T, B, I = x.shape
    D, G = w_ih.shape[0], w_ih.shape[1]
    H = G // 4
    P = w_hr.shape[1] if w_hr is not None else 0
    R = h0.shape[2]
    return T, B, I, H, P, R, G, D


def _contig(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def input_projection(x: Tensor, w_ih: Tensor, bias: Optional[Tensor]) -> Tensor:
    """x (T, B, I) -> gx (T, B, D, G) = x W_ih^T + bias for every step and direction."""
    T, B, I = x.shape
    D, G = w_ih.shape[0], w_ih.shape[1]
    x2, w2 = x.reshape(T * B, I), w_ih.reshape(D * G, I).t()
    gx = torch.addmm(bias.reshape(D * G), x2, w2) if bias is not None else x2 @ w2
    return gx.view(T, B, D, G)


def choose_layer_path(T, H, R, proj, dtype, target, has_resets):
    """tuning.choose_path, except that a call with resets on a GPU takes the step path: the
    sequence kernel's resets variant (two more tiles live across the loop) spills registers at
    the edge of tuning's size rule for sm_80/sm_90 and does not compile in float64 (measured
    by compiling tests/test_triton_aot.py's edge configurations with has_resets=True): it runs
    under the interpreter only until the rule accounts for it."""
    path = choose_path(T, H, R, proj, dtype, target)
    if has_resets and target is not None and path == "sequence":
        return "step"
    return path


def layer_configs(
    T, B, H, R, dtype, *, proj, peep, has_len, train, target, path=None, has_resets=False
):
    """The KernelConfigs (launch_config.py) that one layer call of these sizes launches on
    `target`: the forward (saving gates and cells when `train`), and with `train` the
    backward. path: as tuning.choose_path decides (choose_layer_path), unless given. The
    launchers below launch exactly these."""
    path = path or choose_layer_path(T, H, R, proj, dtype, target, has_resets)
    if path == "sequence":
        out = [
            sequence_forward_config(
                B,
                H,
                R,
                0,
                dtype,
                has_len,
                peep,
                proj,
                save=train,
                write_y=True,
                pool=False,
                has_pb=False,
                has_q=False,
                target=target,
                has_resets=has_resets,
            )
        ]
        if train:
            out.append(
                sequence_backward_config(
                    B, H, R, dtype, has_len, peep, proj, target, has_resets=has_resets
                )
            )
    else:
        out = [gate_forward_config(B, H, dtype, has_len, peep, not proj, train, target)]
        if train:
            out.append(gate_backward_config(B, H, dtype, has_len, peep, target))
    return out


def attentive_configs(B, H, R, A, dtype, *, proj, peep, has_len, has_pb, has_q, target):
    """The KernelConfig of triton_attentive_lstm_inference's one launch (pooled last layer)."""
    return [
        sequence_forward_config(
            B,
            H,
            R,
            A,
            dtype,
            has_len,
            peep,
            proj,
            save=False,
            write_y=False,
            pool=True,
            has_pb=has_pb,
            has_q=has_q,
            target=target,
        )
    ]


def layer_forward(x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, save, resets=None):
    """One layer, every direction: y, h_n, c_n, and gates, cells when `save` (else None).
    Shapes: csrc/lstm_layer_args.h (resets (T, B) bool or None)."""
    T, B, I, H, P, R, G, D = layer_sizes(x, h0, w_ih, w_hr)
    x, h0, c0, w_ih, w_hh = (t.contiguous() for t in (x, h0, c0, w_ih, w_hh))
    bias, w_hr, w_peep, lengths = map(_contig, (bias, w_hr, w_peep, lengths))
    if T == 0 or B == 0:  # nothing to run; y, gates and cells are empty
        return (
            x.new_zeros((T, B, D * R)),
            h0.clone(),
            c0.clone(),
            x.new_zeros((D, T, B, G)) if save else None,
            x.new_zeros((D, T, B, H)) if save else None,
        )
    gx = input_projection(x, w_ih, bias)
    target = device_target(x.device)
    path = choose_layer_path(T, H, R, w_hr is not None, x.dtype, target, resets is not None)
    if path == "sequence":
        return sequence_forward(gx, h0, c0, w_hh, w_hr, w_peep, lengths, save, target, resets)
    return step_forward(gx, h0, c0, w_hh, w_hr, w_peep, lengths, save, target, resets)


def attentive_supported(
    H: int, R: int, A: int, proj: bool, dtype: torch.dtype, target=None
) -> bool:
    """Whether triton_attentive_lstm_inference runs these sizes in one launch on `target`
    (else the caller runs the layer, then the pooling)."""
    return choose_path(2, H, R, proj, dtype, target) == "sequence" and attentive_fits(
        H, R, A, proj, dtype, target
    )


def attentive_forward(
    x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj
):
    """The attentive LSTM's last layer in inference (csrc/ops.cpp, attentive_lstm_inference),
    on checked arguments (csrc/attentive_args.h): one direction; the input projection GEMM, then
    one launch of the sequence kernel that pools every step's output as it is computed (online
    softmax), so y is never written. The kernel pools every step (no chunks). Sizes must pass
    attentive_supported."""
    T, B, I, H, P, R, G, D = layer_sizes(x, h0, w_ih, w_hr)
    A = proj_weight.shape[0]
    target = device_target(x.device)
    if not attentive_supported(H, R, A, w_hr is not None, x.dtype, target):
        raise ValueError(
            f"attentive_lstm_inference_triton: H={H}, R={R}, A={A} do not fit the "
            f"sequence kernel on chip (tuning.attentive_fits)"
        )
    if T == 0 or B == 0:
        return (
            x.new_zeros((B, R)),
            x.new_zeros((B, T)),
            x.new_full((B,), float("-inf")),
            h0.clone(),
            c0.clone(),
        )
    x, h0, c0, w_ih, w_hh, proj_weight, v = (
        t.contiguous() for t in (x, h0, c0, w_ih, w_hh, proj_weight, v)
    )
    bias, w_hr, w_peep, lengths, proj_bias, qproj = map(
        _contig, (bias, w_hr, w_peep, lengths, proj_bias, qproj)
    )
    gx = input_projection(x, w_ih, bias)
    return sequence_attentive_forward(
        gx, h0, c0, w_hh, w_hr, w_peep, lengths, proj_weight, proj_bias, v, qproj, target
    )


def previous_outputs(
    y: Tensor,
    h0: Tensor,
    lengths: Optional[Tensor],
    d: int,
    R: int,
    resets: Optional[Tensor] = None,
) -> Tensor:
    """r_{t-1} seen by each step of direction d, (T, B, R): h0 before the first step and where
    a reset restarts the row (lstm_cell.reset_before), else the previous step's output. A
    reverse sequence of length l starts at t = l - 1 from h0."""
    T = y.shape[0]
    y_d = y[:, :, d * R : (d + 1) * R]
    first = h0[d].unsqueeze(0)
    fresh = reset_before(resets, lengths, d)
    if d == 0:
        prev = torch.cat([first, y_d[:-1]], 0)
    else:
        prev = torch.cat([y_d[1:], first], 0)
    if d == 1 and lengths is not None:
        next_t = torch.arange(1, T + 1, device=y.device).unsqueeze(1)  # (T, 1)
        starts = (next_t >= lengths.unsqueeze(0)).unsqueeze(2)  # (T, B, 1)
        prev = torch.where(starts, first.expand_as(prev), prev)
    if fresh is not None:
        prev = torch.where(fresh.unsqueeze(2), first.expand_as(prev), prev)
    return prev


def weight_gradients(dZ, dR, x, h0, c0, w_ih, w_hr, w_peep, lengths, y, gates, cells, resets=None):
    """Everything outside the recurrence, one GEMM per weight over all T*B rows.
    dZ (T, B, D, G); dR (D, T, B, R) or None. Returns grad_x, grad_w_ih, grad_w_hh,
    grad_bias, grad_w_hr, grad_w_peep (the last two empty (0,) when absent)."""
    T, B, D, G = dZ.shape
    I, H, R = x.shape[2], G // 4, h0.shape[2]
    dZ2 = dZ.reshape(T * B, D * G)
    grad_x = (dZ2 @ w_ih.reshape(D * G, I)).view(T, B, I)
    grad_w_ih = (dZ2.t() @ x.reshape(T * B, I)).view(D, G, I)
    grad_bias = dZ2.sum(0, dtype=torch.float64 if dZ.dtype == torch.float64 else torch.float32)
    grad_bias = grad_bias.to(dZ.dtype).view(D, G)
    grad_w_hh = torch.stack(
        [
            dZ[:, :, d].reshape(T * B, G).t()
            @ previous_outputs(y, h0, lengths, d, R, resets)[:T].reshape(T * B, R)
            for d in range(D)
        ]
    )
    grad_w_hr = x.new_empty((0,))
    if w_hr is not None:
        h_pre = gates[:, :, :, 3 * H :] * torch.tanh(cells)  # (D, T, B, H), zero when padded
        grad_w_hr = torch.bmm(dR.reshape(D, T * B, R).transpose(1, 2), h_pre.reshape(D, T * B, H))
    grad_w_peep = x.new_empty((0,))
    if w_peep is not None:
        acc = torch.float64 if dZ.dtype == torch.float64 else torch.float32
        rows = []
        for d in range(D):
            cells_d = cells[d].to(acc)
            first = c0[d].unsqueeze(0).to(acc)
            c_prev = (
                torch.cat([first, cells_d[:-1]], 0)
                if d == 0
                else torch.cat([cells_d[1:], first], 0)
            )[:T]
            fresh = reset_before(resets, lengths, d)
            if fresh is not None:
                c_prev = torch.where(fresh.unsqueeze(2), first, c_prev)
            dz_d = dZ[:, :, d].to(acc)
            rows.append(
                torch.stack(
                    [
                        (dz_d[..., :H] * c_prev).sum((0, 1)),
                        (dz_d[..., H : 2 * H] * c_prev).sum((0, 1)),
                        (dz_d[..., 3 * H :] * cells_d).sum((0, 1)),
                    ]
                )
            )
        grad_w_peep = torch.stack(rows).to(dZ.dtype)
    return grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_w_peep


def layer_backward(
    grad_y,
    grad_h_n,
    grad_c_n,
    x,
    h0,
    c0,
    w_ih,
    w_hh,
    w_hr,
    w_peep,
    lengths,
    resets,
    y,
    gates,
    cells,
):
    """The gradients of one layer call (csrc/ops.cpp, lstm_layer_backward) on checked
    arguments: grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr,
    grad_w_peep (the last two empty (0,) when absent)."""
    T, B, I, H, P, R, G, D = layer_sizes(x, h0, w_ih, w_hr)
    (grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, gates, cells) = (
        t.contiguous() for t in (grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, gates, cells)
    )
    w_hr, w_peep, lengths = map(_contig, (w_hr, w_peep, lengths))
    target = device_target(x.device)
    path = (
        choose_layer_path(T, H, R, w_hr is not None, x.dtype, target, resets is not None)
        if T and B
        else "empty"
    )
    if path == "empty":
        dZ = x.new_zeros((T, B, D, G))
        dR = x.new_zeros((D, T, B, R)) if w_hr is not None else None
        grad_h0, grad_c0 = grad_h_n.clone(), grad_c_n.clone()
    elif path == "sequence":
        dZ, dR, grad_h0, grad_c0 = sequence_backward(
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
            target,
            resets,
        )
    else:
        dZ, dR, grad_h0, grad_c0 = step_backward(
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
            target,
            resets,
        )
    grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_w_peep = weight_gradients(
        dZ, dR, x, h0, c0, w_ih, w_hr, w_peep, lengths, y, gates, cells, resets
    )
    return grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr, grad_w_peep
