"""The training loop behind segfast.train: one process on a CPU or many under torchrun.

Optimisation is defined by the config alone: global batch and total steps are explicit, and
each process derives its micro-batches per step (accumulation) from the world size, so one
config trains the same way on 1 or 8 devices.
"""

import contextlib
import logging
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from segfast import registry
from segfast.config import ConfigError, TrainConfig, validate
from segfast.data.collate import to_device
from segfast.data.loader import make_loader
from segfast.train import checkpoint, memory
from segfast.train.distributed import DistEnv, accumulation_steps, init_distributed, mean_across, shutdown, sum_across
from segfast.train.evaluation import evaluate
from segfast.train.precision import autocast, choose_precision, grad_scaler
from segfast.train.progress import Logger
from segfast.train.rng import rng_state, seed_everything
from segfast.train.schedule import build_optimizer
from segfast.train.watchdog import launcher_watch

log = logging.getLogger("segfast")


class NonFiniteLoss(FloatingPointError):
    """Raised when a step's loss is NaN or Inf; a checkpoint of the state before it is saved."""


def _wrap(model, cfg: TrainConfig, env: DistEnv):
    strategy = cfg.run.strategy
    if strategy == "auto":
        strategy = "ddp" if env.distributed else "none"
    if strategy == "none":
        if env.distributed:
            raise ConfigError("run.strategy=none with several processes: use ddp or fsdp")
        return model, strategy
    if strategy == "ddp":
        if not env.distributed:
            return model, "none"
        ids = [env.local_rank] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids), strategy
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    blocks = model.transformer_blocks() if hasattr(model, "transformer_blocks") else []
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, strategy


class _Batches:
    """Endless micro-batches across epochs. (epoch, position) is the data position: how many
    samples of the epoch's order all processes together have read (segfast.data.loader), so a
    run resumes exactly on any number of processes."""

    def __init__(self, dataset, cfg: TrainConfig, env: DistEnv, epoch: int = 0, position: int = 0):
        self.dataset, self.cfg, self.env = dataset, cfg, env
        self.epoch, self.position = epoch, position
        self._iter = self._open()

    def _open(self):
        return iter(
            make_loader(
                self.dataset,
                self.cfg.run.micro_batch_size,
                self.env.rank,
                self.env.world_size,
                self.cfg.run.seed,
                self.epoch,
                self.position,
                self.cfg.data.num_workers,
            )
        )

    def next(self) -> dict:
        item = next(self._iter, None)
        if item is None:  # the epoch is over (or had no whole round left after a resume)
            self.epoch, self.position = self.epoch + 1, 0
            self._iter = self._open()
            item = next(self._iter)
        self.position += self.cfg.run.micro_batch_size * self.env.world_size
        return item

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}


def share_target_tokens(step_batches: list, inner, env: DistEnv) -> None:
    """Sets batch["num_items_in_batch"] = the target tokens of the whole global batch divided by
    its number of micro-batches, for models that count their targets (count_targets): with the
    engine's 1/accumulation and DDP's 1/world, each token then weighs 1/(global target tokens),
    as one process with the whole batch would weigh it (segfast.models.llm.token_mean_kwargs)."""
    if not hasattr(inner, "count_targets"):
        return
    local = torch.tensor([float(sum(inner.count_targets(b) for b in step_batches))], device=env.device)
    total = sum_across(local, env).item()
    share = max(total, 1.0) / (len(step_batches) * env.world_size)
    for batch in step_batches:
        batch["num_items_in_batch"] = share


def run(cfg: TrainConfig) -> dict:
    validate(cfg)  # a TrainConfig built in code has not been through load_config
    env = init_distributed(cfg.run.device)
    try:
        return _run(cfg, env)
    finally:
        shutdown(env)


def _run(cfg: TrainConfig, env: DistEnv) -> dict:
    run_cfg = cfg.run
    accum = accumulation_steps(run_cfg.global_batch_size, run_cfg.micro_batch_size, env.world_size)
    precision = choose_precision(run_cfg.precision, env.device)
    latest = checkpoint.resume_checkpoint(run_cfg.output_dir, env) if run_cfg.resume else None
    seed_everything(run_cfg.seed)  # identical initial weights on every rank
    inner = registry.system(cfg.model.name).model(cfg.model, env.device).to(env.device)
    if run_cfg.init_from and latest is None:
        source = checkpoint.load_weights(run_cfg.init_from, inner, run_cfg.init_strict)
        if env.is_main:
            print(f"segfast: initialised from {source}", flush=True)
    if run_cfg.gradient_checkpointing and hasattr(inner, "enable_gradient_checkpointing"):
        inner.enable_gradient_checkpointing()
    model, strategy = _wrap(inner, cfg, env)
    optimizer, scheduler = build_optimizer(model.parameters(), cfg.optim, run_cfg.total_steps)
    scaler = grad_scaler(precision, env.device)
    train_data = registry.build_dataset(cfg.data.name, cfg.data.options, "train", run_cfg.seed)
    eval_data = (
        registry.build_dataset(cfg.data.name, cfg.data.options, "eval", run_cfg.seed) if run_cfg.eval_every else None
    )
    step, epoch, position = 0, 0, 0
    if latest is not None:
        state = checkpoint.load_checkpoint(latest, model, optimizer, scheduler, env, run_cfg.seed)
        step, epoch, position = state["step"], state["epoch"], state["position"]
        if env.is_main:
            unused = f" (run.init_from={run_cfg.init_from} is for a fresh start only)" if run_cfg.init_from else ""
            print(f"segfast: resumed from {latest} at step {step}{unused}", flush=True)
    else:
        seed_everything(run_cfg.seed + env.rank)  # per-rank randomness (dropout) from here on
    batches = _Batches(train_data, cfg, env, epoch, position)
    if env.is_main:
        seq = int(cfg.data.options.get("seq_len", 512))
        est = memory.estimate(
            inner,
            run_cfg.micro_batch_size,
            seq,
            run_cfg.gradient_checkpointing,
            precision,
            env.world_size,
            strategy == "fsdp",
        )
        print(
            f"segfast: {env.world_size} process(es) on {env.device.type}, strategy {strategy}, precision "
            f"{precision}, {accum} micro-batch(es) of {run_cfg.micro_batch_size} per step; memory estimate: "
            f"{memory.describe(est)}",
            flush=True,
        )
    logger = Logger(cfg, env, step)
    config_dict = cfg.to_dict()
    losses, steps_this_run = [], 0

    def save(name, position=None, rng=None):
        return checkpoint.save_checkpoint(
            name,
            model,
            inner,
            optimizer,
            scheduler,
            {"step": step, **(position or batches.state())},
            config_dict,
            env,
            run_cfg.output_dir,
            run_cfg.keep_last,
            rng,
        )

    watch = launcher_watch()
    try:
        while step < run_cfg.total_steps:
            if watch is not None:
                watch.check(env)  # a dead launcher: stop here, before another step or checkpoint
            started = time.perf_counter()
            position, rng = batches.state(), rng_state()  # the state before this step, for a non-finite stop
            totals, tokens, samples = {}, 0, 0
            step_batches = [batches.next() for _ in range(accum)]
            share_target_tokens(step_batches, inner, env)
            for micro, batch in enumerate(step_batches):
                batch = to_device(batch, env.device)
                sync = micro == accum - 1 or strategy != "ddp"
                context = model.no_sync() if not sync else contextlib.nullcontext()
                with context:
                    with autocast(precision, env.device):
                        named = model(batch)
                    loss = sum(named.values())
                    scaler.scale(loss / accum).backward()
                for k, v in named.items():
                    totals[k] = totals.get(k, 0.0) + v.detach().float() / accum
                tokens += inner.count_tokens(batch) if hasattr(inner, "count_tokens") else 0
                samples += run_cfg.micro_batch_size
            total = mean_across(sum(totals.values()), env)
            if not torch.isfinite(total):
                path = save(f"step-{step:06d}-nonfinite", position, rng)
                raise NonFiniteLoss(
                    f"loss is {total.item()} at step {step + 1}; the state before this step (weights, "
                    f"optimizer, data position, random state) is saved in {path}, and --resume "
                    "continues from it, replaying this step's batches. Lower optim.lr, check the "
                    "data, or use run.precision=fp32 first."
                )
            if cfg.optim.clip_grad > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            steps_this_run += 1
            elapsed = time.perf_counter() - started
            record = {
                "step": step,
                "loss": total.item(),
                "lr": lr,
                "samples_per_s": samples * env.world_size / elapsed,
                "tokens_per_s": tokens * env.world_size / elapsed,
                **{k: mean_across(v, env).item() for k, v in totals.items()},
            }
            losses.append(record["loss"])
            logger.advance(
                {
                    "loss": f"{record['loss']:.4f}",
                    "lr": f"{lr:.2e}",
                    "samples/s": f"{record['samples_per_s']:.1f}",
                    "tokens/s": f"{record['tokens_per_s']:.0f}",
                }
            )
            if step % run_cfg.log_every == 0 or step == run_cfg.total_steps:
                logger.log(record)
            if eval_data is not None and step % run_cfg.eval_every == 0:
                logger.log({"step": step, **evaluate(model, inner, eval_data, cfg, env, precision)})
            if step % run_cfg.save_every == 0 or step == run_cfg.total_steps:
                save(f"step-{step:06d}")
            if run_cfg.stop_after and steps_this_run >= run_cfg.stop_after and step < run_cfg.total_steps:
                break
    finally:
        logger.close()
    return {"step": step, "losses": losses, "strategy": strategy, "precision": precision, "accumulation_steps": accum}
