"""Numerics: bf16 autocast where the GPU supports it, fp16 with a grad scaler where it does not,
fp32 on CPUs. The choice is logged, never silent."""

import contextlib

import torch


def choose_precision(requested: str, device: torch.device) -> str:
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            raise ValueError(f"run.precision={requested} needs a GPU; this run is on {device}")
        return "fp32"
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"run.precision=bf16 but {torch.cuda.get_device_name(device)} does not support bf16; use fp16 or auto"
        )
    if requested != "auto":
        return requested
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device):
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
