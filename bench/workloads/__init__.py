"""Workloads by family: lstm, lstm_cell, masked_softmax, attention_pooling, self_attention,
attentive_lstm, model_step, inference_onnx, overhead."""

from .attention import AttentionPoolingWorkload, MaskedSoftmaxWorkload, SelfAttentionWorkload
from .attentive import AttentiveLSTMWorkload
from .inference_onnx import InferenceONNXWorkload
from .lstm import LSTMCellWorkload, LSTMWorkload
from .model import ModelStepWorkload
from .overhead import OverheadWorkload

WORKLOADS = {
    w.family: w
    for w in (
        LSTMWorkload(),
        LSTMCellWorkload(),
        MaskedSoftmaxWorkload(),
        AttentionPoolingWorkload(),
        SelfAttentionWorkload(),
        AttentiveLSTMWorkload(),
        ModelStepWorkload(),
        InferenceONNXWorkload(),
        OverheadWorkload(),
    )
}
