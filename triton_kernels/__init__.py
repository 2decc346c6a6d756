"""Triton kernels of lstm_fused (installed as lstm_fused.triton_kernels).

Importing a kernel module imports Triton; the package itself imports nothing, so each op
family loads only its own kernels. Under TRITON_INTERPRET=1 (set before the import) the kernels
run on CPU tensors, slowly: tests only.

LSTM (backend="triton"; `import lstm_fused.triton_kernels.lstm_layer` registers the operators
lstm_fused::triton_lstm_layer_forward / triton_lstm_layer_backward):
    lstm_math.py           element-wise cell math (sigmoid, tanh, cell forward / backward)
    lstm_cell.py           fused gate kernels (one step) and the step-by-step layer path
    lstm_sequence.py       fused-sequence kernels: the whole time loop of a layer in one launch
    lstm_persistent.py     experimental multi-program kernels for large H (never run on a GPU)
    tuning.py              block sizes, warps, which path a shape takes; test switches
    lstm_layer.py          the registered operators, argument checks, weight gradients
    interpreter_compat.py  a fix for the interpreter under NumPy >= 2.4
"""
