"""Triton kernels of lstm_fused (installed as lstm_fused.triton_kernels): kernels and their
launchers only. Nothing here imports lstm_fused or reads the environment; the launchers are
plain functions of tensors, which lstm_fused/ops/*.py registers as the operators
lstm_fused::<name>_triton (after the argument checks) and configures (tuning.configure).

Importing a kernel module imports Triton; the package itself imports nothing, so each op
family loads only its own kernels. Under Triton's interpreter (TRITON_INTERPRET=1, set before
the import) the kernels run on CPU tensors, slowly: tests only.

LSTM layer (launchers in lstm_layer.py: layer_forward, layer_backward, attentive_forward):
    lstm_math.py           element-wise cell math (sigmoid, tanh, cell forward / backward)
    lstm_cell.py           fused gate kernels (one step) and the step-by-step layer path
    lstm_sequence.py       fused-sequence kernels: the whole time loop of a layer in one launch
    tuning.py              block sizes, warps, which path a shape takes; poisoning, forced path
    lstm_layer.py          the launchers of a layer call, weight gradients
Attention (launchers in attention_ops.py, one per operator of csrc/attention_schemas.h):
    attention_softmax.py, attention_pooling.py, attention_channel.py
Self-attention (mhsa.py: mhsa_forward / mhsa_backward)
Shared: launch_config.py (KernelConfig: the one way a kernel is configured and launched, also
compiled ahead of time by tests/test_triton_aot.py), interpreter_compat.py (a fix for the
interpreter under NumPy >= 2.4).
"""
