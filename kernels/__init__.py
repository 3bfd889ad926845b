"""Triton kernels of segfast, installed as segfast.kernels.

Each module holds the kernels of one op family; segfast.ops wraps them behind
torch.library ops. Triton is optional: `available()` says whether it can be used, and the
kernels also run on the CPU under TRITON_INTERPRET=1 for testing.
"""

import contextlib
import importlib.util


def available() -> bool:
    """True when the triton package is importable."""
    return importlib.util.find_spec("triton") is not None


def device_guard(tensor):
    """The context to launch kernels on `tensor` in: Triton launches on the *current* CUDA device
    and its stream, so inputs on cuda:1 need cuda:1 made current. No-op off CUDA."""
    if tensor.device.type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(tensor.device)
