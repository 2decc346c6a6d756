"""Triton kernels of lstm_fused (installed as lstm_fused.triton_kernels).

Importing this package imports Triton and registers the operators
lstm_fused::triton_lstm_layer_forward / triton_lstm_layer_backward (lstm_layer.py). Under
TRITON_INTERPRET=1 (set before this import) the kernels run on CPU tensors, slowly: tests only.

    lstm_math.py      element-wise cell math (sigmoid, tanh, cell forward / backward)
    lstm_cell.py      fused gate kernels (one step) and the step-by-step layer path
    lstm_sequence.py  fused-sequence kernels: the whole time loop of a layer in one launch
    tuning.py         block sizes, warps, and which path a shape takes
    lstm_layer.py     the registered operators, argument checks, weight gradients
    interpreter_compat.py  a fix for the interpreter under NumPy >= 2.4
"""
from . import interpreter_compat

interpreter_compat.apply()

from . import lstm_layer  # noqa: F401,E402  (registers the operators)
from .lstm_layer import SUPPORTED_DTYPES, check_layer_args  # noqa: E402
from .tuning import choose_path, force_path, poison_outputs  # noqa: E402

__all__ = ["SUPPORTED_DTYPES", "check_layer_args", "choose_path", "force_path", "poison_outputs"]
