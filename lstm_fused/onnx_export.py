"""ONNX export of the LSTM layer operator as ONNX's standard LSTM operator.

Both exporters of torch.onnx.export work on a model holding lstm_fused.LSTM / LSTMCell:

    torch.onnx.export(model, (x,), "model.onnx", dynamo=False)   # TorchScript exporter
    torch.onnx.export(model, (x,), "model.onnx", dynamo=True)    # torch.export-based exporter

Every layer call becomes one ONNX LSTM node (opset 14 or newer), whatever the backend:
- weights and bias are reordered from PyTorch's gate order i, f, g, o to ONNX's i, o, f, c;
  the bias b_ih + b_hh goes in as ONNX's Wb, with Rb = 0;
- peephole weights (w_ci, w_cf, w_co) go to ONNX's P input, in its order i, o, f;
- lengths (a PackedSequence input) go to sequence_lens; a bidirectional layer is
  direction="bidirectional"; y (T, D, B, H) is transposed back to (T, B, D*H).
ONNX's LSTM has no projection: a model with proj_size > 0 raises a clear error at export.

How each exporter gets the LSTM node (lstm_fused.functional.lstm_layer checks
`exporting_onnx()` and takes one of these roads, whatever the backend; nothing to register or
pass to torch.onnx.export):
- TorchScript exporter: the layer is traced as lstm_fused::lstm_layer_inference, whose
  symbolic (torch.onnx.register_custom_op_symbolic, registered on the first export) writes the
  LSTM node and the reordering around it.
- torch.export-based exporter: the layer is written with torch.onnx.ops.symbolic_multi_out
  (torch's public way to put a given ONNX operator in the exported graph), the reordering
  with torch ops (`dynamo_layer`).
The C++ extension must be loaded for the TorchScript road (its operator is what is traced).
"""

from __future__ import annotations

import torch

LAYER_OP = "lstm_fused::lstm_layer_inference"  # what the TorchScript exporter traces
MIN_OPSET = 14  # the symbolic is registered for opsets >= 14 (the LSTM-14 schema)

PROJECTION_ERROR = (
    "lstm_fused: ONNX export of an LSTM with proj_size > 0 is not supported: "
    "ONNX's LSTM operator has no projection (weight_hr). Export without "
    "proj_size, or keep the model in PyTorch (torch.export works)."
)


def onnx_gate_order(hidden_size: int) -> torch.Tensor:
    """Row indices that take PyTorch's (i, f, g, o) blocks of 4H rows to ONNX's (i, o, f, c)."""
    H = hidden_size
    return torch.cat(
        [
            torch.arange(0, H),
            torch.arange(3 * H, 4 * H),
            torch.arange(H, 2 * H),
            torch.arange(2 * H, 3 * H),
        ]
    )


# Peephole rows: ours (w_ci, w_cf, w_co) -> ONNX's P = (P_i, P_o, P_f).
PEEPHOLE_ORDER = [0, 2, 1]


try:  # the flag torch.onnx.export(dynamo=True) raises while it runs (a private module)
    from torch.onnx._internal.exporter import _flags as _dynamo_flags
except ImportError:  # another torch: torch.onnx.is_in_onnx_export() alone
    _dynamo_flags = None


def exporting_onnx() -> bool:
    """Whether the running code is being exported by torch.onnx.export, either exporter."""
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        return False  # torch.compile, never an export
    if torch.jit.is_tracing():  # the TorchScript exporter traces
        return torch.onnx.is_in_onnx_export()
    # torch.onnx.export(dynamo=True) captures the model with torch.export, non-strict first,
    # then strict (traced by dynamo, which reads a module attribute but folds
    # torch.onnx.is_in_onnx_export() to False)
    if _dynamo_flags is not None:
        return bool(_dynamo_flags._is_onnx_exporting)
    return torch.onnx.is_in_onnx_export()


# ----------------------------------------------------------------------- TorchScript exporter


def _absent(g):
    """An optional ONNX input left out."""
    n = g.op("prim::Constant")
    n.setType(torch._C.OptionalType.ofTensor())
    return n


def _symbolic_layer(g, x, h0, c0, w_ih, w_hh, bias, w_hr, w_peep, lengths, resets=None):
    """The ONNX nodes of one lstm_layer_inference call, TorchScript exporter (g: its graph
    context; the arguments are graph values; resets is always absent: the functional layer
    refuses to export them). Returns y, h_n, c_n."""
    from torch.onnx import symbolic_helper as sh

    if not sh._is_none(w_hr):
        raise RuntimeError(PROJECTION_ERROR)
    D, G, _ = sh._get_tensor_sizes(w_ih)
    H = G // 4
    order = g.op("Constant", value_t=onnx_gate_order(H))
    W = g.op("Gather", w_ih, order, axis_i=1)
    R = g.op("Gather", w_hh, order, axis_i=1)
    if sh._is_none(bias):
        B = _absent(g)  # ONNX: zero
    else:
        b = g.op("Gather", bias, order, axis_i=1)
        B = g.op("Concat", b, g.op("Sub", b, b), axis_i=1)  # [Wb, Rb = 0]
    seq = _absent(g) if sh._is_none(lengths) else g.op("Cast", lengths, to_i=6)  # int32
    inputs = [x, W, R, B, seq, h0, c0]
    if not sh._is_none(w_peep):
        p = g.op("Gather", w_peep, g.op("Constant", value_t=torch.tensor(PEEPHOLE_ORDER)), axis_i=1)
        inputs.append(g.op("Reshape", p, g.op("Constant", value_t=torch.tensor([D, 3 * H]))))
    Y, Y_h, Y_c = g.op(
        "LSTM",
        *inputs,
        hidden_size_i=H,
        direction_s="bidirectional" if D == 2 else "forward",
        outputs=3,
    )
    Y = g.op("Transpose", Y, perm_i=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
    y = g.op("Reshape", Y, g.op("Constant", value_t=torch.tensor([0, 0, -1])))
    return y, Y_h, Y_c


_registered_torchscript = False


def register() -> None:
    """Register the TorchScript exporter's symbolic of the layer operator (idempotent)."""
    global _registered_torchscript
    if not _registered_torchscript:
        torch.onnx.register_custom_op_symbolic(LAYER_OP, _symbolic_layer, MIN_OPSET)
        _registered_torchscript = True


# ---------------------------------------------------------------- torch.export-based exporter


def dynamo_layer(x, h0, c0, w_ih, w_hh, bias, w_peep, lengths):
    """One layer call inside torch.onnx.export(dynamo=True): the operands in ONNX's layout by
    torch ops (gathers of the weights, folded into constants by the exporter) and ONNX's LSTM
    node itself by torch.onnx.ops.symbolic_multi_out, which the exporter writes as it is.
    Shapes as in functional.lstm_layer (no projection). Returns y (T, B, D*H), h_n, c_n."""
    T, Bsz = x.shape[0], x.shape[1]
    D, G = w_ih.shape[0], w_ih.shape[1]
    H = G // 4
    order = onnx_gate_order(H).to(x.device)
    W = w_ih.index_select(1, order)
    R = w_hh.index_select(1, order)
    B = None
    if bias is not None:
        b = bias.index_select(1, order)
        B = torch.cat([b, torch.zeros_like(b)], dim=1)  # [Wb, Rb = 0]
    seq = None if lengths is None else lengths.to(torch.int32)
    P = None
    if w_peep is not None:
        P = w_peep[:, PEEPHOLE_ORDER].reshape(D, 3 * H)
    Y, Y_h, Y_c = torch.onnx.ops.symbolic_multi_out(
        "LSTM",
        [x, W, R, B, seq, h0, c0, P],
        dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward"),
        dtypes=(x.dtype, x.dtype, x.dtype),
        shapes=((T, D, Bsz, H), (D, Bsz, H), (D, Bsz, H)),
        version=MIN_OPSET,
    )
    return Y.permute(0, 2, 1, 3).reshape(T, Bsz, D * H), Y_h, Y_c
