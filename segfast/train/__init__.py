"""segfast.train: one training engine from a laptop CPU to multi-GPU nodes.

    segfast.train("run.yaml")                       # a YAML path
    segfast.train({"run": {"total_steps": 10}})     # a dict
    segfast.train(load_config("run.yaml", ["optim.lr=1e-4"]))

Run the same call under `torchrun --nproc_per_node=N` for DDP or FSDP2 (run.strategy).
"""

from pathlib import Path

from segfast.config import ConfigError, TrainConfig, load_config


def train(config) -> dict:
    """Train from a TrainConfig, a dict or a YAML path; returns {"step", "losses", ...}."""
    from segfast.train.engine import run

    if isinstance(config, (str, Path)):
        config = load_config(config)
    elif isinstance(config, dict):
        config = load_config(base=config)
    elif not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, dict or YAML path, got {type(config).__name__}")
    return run(config)


__all__ = ["train", "load_config", "TrainConfig", "ConfigError"]
