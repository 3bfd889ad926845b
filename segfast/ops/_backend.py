"""Per-call backend choice, xformers-style.

Each op lists its backends in order of preference. A backend says why it cannot take a call
(a short reason) or returns None; the first with no reason runs. SEGFAST_BACKEND forces one
backend by name, and when nothing fits the error lists every backend's reason.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

from segfast import _extension

BACKEND_NAMES = ("reference", "cpu", "cuda", "int_mm", "triton", "sdpa")


@dataclass(frozen=True)
class Backend:
    name: str
    unsupported: Callable[..., str | None]  # same arguments as run; a reason, or None
    run: Callable


def forced_backend() -> str | None:
    name = os.environ.get("SEGFAST_BACKEND", "").strip().lower()
    if not name:
        return None
    if name not in BACKEND_NAMES:
        raise ValueError(f"SEGFAST_BACKEND must be one of {', '.join(BACKEND_NAMES)}, got {name!r}")
    return name


def choose(op: str, backends: list, *args, **kwargs) -> Backend:
    forced = forced_backend()
    candidates = [b for b in backends if forced is None or b.name == forced]
    if not candidates:
        names = ", ".join(b.name for b in backends)
        raise NotImplementedError(f"segfast.ops.{op}: SEGFAST_BACKEND={forced} but this op has only: {names}")
    reasons = []
    for backend in candidates:
        reason = backend.unsupported(*args, **kwargs)
        if reason is None:
            return backend
        reasons.append(f"{backend.name}: {reason}")
    raise NotImplementedError(f"segfast.ops.{op}: no backend can run this call ({'; '.join(reasons)})")


def compiled_on(device_type: str) -> Callable[..., str | None]:
    """The `unsupported` check of a segfast._C backend for `device_type`: the first argument
    (a tensor) must be on that device and the extension must have kernels for it."""

    def unsupported(first, *_):
        if first.device.type != device_type:
            return f"inputs are on {first.device}"
        return _extension.missing_reason(first.device)

    return unsupported
