"""Triton kernels of segfast, installed as segfast.kernels.

Each module holds the kernels of one op family; segfast.ops wraps them behind
torch.library ops. Triton is optional: `available()` says whether it can be used, and the
kernels also run on the CPU under TRITON_INTERPRET=1 for testing.
"""

import importlib.util


def available() -> bool:
    """True when the triton package is importable."""
    return importlib.util.find_spec("triton") is not None
