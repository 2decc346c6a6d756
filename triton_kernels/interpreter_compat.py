"""A fix for Triton 3.6's interpreter (TRITON_INTERPRET=1) under NumPy >= 2.4.

The interpreter holds scalars as one-element 1-D arrays and converts them with int(array),
which NumPy 2.4 refuses ("only 0-dimensional arrays can be converted to Python scalars"), so
any `for s in range(0, T)` with a runtime bound fails. When (and only when) this NumPy
refuses, the interpreter's tensor.__index__ is replaced by one that takes the single element.
Only the interpreter's own code is patched: nothing changes for compiled kernels, so the fix is
applied whether or not the interpreter runs. Pinning numpy<2.4 is the alternative.
"""

import numpy as np


def _numpy_refuses_one_element_int() -> bool:
    try:
        int(np.array([1]))
    except TypeError:
        return True
    return False


def apply() -> None:
    if not _numpy_refuses_one_element_int():
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_lstm_fused_fix", False):
        return

    def index(self):
        data = self.handle.data
        if data.size != 1:
            raise TypeError(f"only a scalar can be used as an index, got a block of {data.size}")
        return int(data.reshape(-1)[0])

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", index)

    patch_lang_tensor._lstm_fused_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor
