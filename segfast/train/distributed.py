"""The distributed environment: detected from torchrun's variables, NCCL on GPUs, gloo on CPUs."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from segfast.config import ConfigError


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """One process, or one of torchrun's (RANK / WORLD_SIZE / LOCAL_RANK set): joins the group.
    device="cpu" keeps the run on CPUs (gloo) even where GPUs exist."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world, local, device)


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def accumulation_steps(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Micro-batches per optimizer step on each device: global = micro x world x accumulation,
    so one config optimises the same way on any number of devices."""
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise ConfigError(
            f"run.global_batch_size={global_batch} must be a multiple of run.micro_batch_size="
            f"{micro_batch} x {world_size} processes = {per_step}"
        )
    return global_batch // per_step


def sum_across(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def mean_across(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    return sum_across(value, env) / env.world_size


def any_across(flag: bool, env: DistEnv) -> bool:
    """True on every rank when `flag` is true on any rank."""
    if not env.distributed:
        return flag
    value = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_object(obj, env: DistEnv):
    """Rank 0's `obj` on every rank (picklable objects)."""
    if env.distributed:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj
