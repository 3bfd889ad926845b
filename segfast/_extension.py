"""Loads the compiled extension segfast._C, or explains once why the reference is used."""

import warnings

import torch  # noqa: F401  (loads libtorch before the extension that links to it)

try:
    from segfast import _C
except ImportError as exc:  # source checkout without a build, or a torch ABI mismatch
    _C = None
    _IMPORT_ERROR = exc
    warnings.warn(
        f"segfast: the compiled extension segfast._C could not be loaded ({exc}); every op falls "
        "back to its plain-PyTorch reference. Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )
else:
    _IMPORT_ERROR = None


def build_info() -> dict:
    """How the extension was built: {'extension': bool, 'cuda': bool, 'version': str, ...}."""
    if _C is None:
        return {"extension": False, "cuda": False, "error": str(_IMPORT_ERROR)}
    return {"extension": True, **_C.build_info()}


def missing_reason(device: torch.device) -> str | None:
    """Why the compiled kernels cannot run on `device`, or None when they can."""
    if _C is None:
        return f"segfast._C is not built ({_IMPORT_ERROR})"
    if device.type == "cuda" and not _C.build_info()["cuda"]:
        return "segfast._C was built without CUDA kernels"
    return None
