"""Triton kernels of segfast, installed as segfast.kernels.

Each module holds the kernels of one op family; segfast.ops wraps them behind
torch.library ops. Triton is optional: `available()` says whether it can be used, and the
kernels also run on the CPU under TRITON_INTERPRET=1 for testing.
"""

import contextlib
import importlib.util
import os


def available() -> bool:
    """True when the triton package is importable."""
    return importlib.util.find_spec("triton") is not None


def unusable_on(device) -> str | None:
    """Why the kernels cannot run on `device` here, or None: they need triton, and a CUDA device
    unless TRITON_INTERPRET=1 interprets them (a CPU tensor handed to compiled Triton is an opaque
    launcher error, even on a machine with a GPU)."""
    if not available():
        return "triton is not installed"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"inputs are on {device} (set TRITON_INTERPRET=1 to interpret the kernels on the CPU)"
    return None


def device_guard(tensor):
    """The context to launch kernels on `tensor` in: Triton launches on the *current* CUDA device
    and its stream, so inputs on cuda:1 need cuda:1 made current. No-op off CUDA."""
    if tensor.device.type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.device(tensor.device)
