"""The operators of lstm_fused, one module per op family, all registered the same way.

Each family module (lstm_layer.py, attention.py, mhsa.py) holds, for the operators
whose schemas the C++ library defines (csrc/ops.cpp, csrc/attention_schemas.h; each with a
Triton twin `<name>_triton`): their fake kernels (torch.compile), their autograd, the Triton
twins' kernels, and the family's table of implementations, one `registry.Implementation` per
backend. Importing this package (lstm_fused/__init__.py does, once) registers every family;
nothing else registers anything. The public functions that pick an implementation per call are
in lstm_fused.functional; docs/architecture.md says where a new op goes.
"""

from . import attention, lstm_frozen, lstm_layer, mhsa  # noqa: F401  (register the families)

FAMILIES = (attention, lstm_layer, mhsa, lstm_frozen)
from .registry import available_backends, implementations, resolve  # noqa: F401, E402
