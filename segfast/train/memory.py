"""A memory estimate printed before the first step: parameters, gradients, AdamW state and a
rough activation figure, so an out-of-memory run is predicted rather than discovered."""

import torch


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def estimate(
    model: torch.nn.Module,
    micro_batch: int,
    seq_len: int,
    checkpointing: bool,
    precision: str,
    world_size: int = 1,
    sharded: bool = False,
) -> dict:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = sum(p.numel() * p.element_size() for p in trainable)
    adam = sum(p.numel() * 8 for p in trainable)  # exp_avg and exp_avg_sq in fp32
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    inner = getattr(model, "lm", None)
    if hidden is None and inner is not None:
        cfg = getattr(inner, "config", None)
        hidden, layers = getattr(cfg, "hidden_size", None), getattr(cfg, "num_hidden_layers", None)
    act_bytes = 2 if precision in ("bf16", "fp16") else 4
    # ~34 values per token per hidden unit per layer without checkpointing (Korthikanti et al.),
    # ~2 (the layer inputs) with it; attention scores are assumed fused (SDPA/flash)
    per_token = (2 if checkpointing else 34) * (hidden or 0) * (layers or 0) * act_bytes
    activations = per_token * micro_batch * seq_len
    shard = world_size if sharded else 1
    out = {
        "parameters": params / shard,
        "gradients": grads / shard,
        "optimizer": adam / shard,
        "activations": activations,
    }
    out["total"] = sum(out.values())
    return out


def describe(est: dict) -> str:
    return ", ".join(f"{k} {_gib(v)}" for k, v in est.items()) + " per device (activations: rough)"
