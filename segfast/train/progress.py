"""What a run reports: a progress bar, metrics.jsonl and optional TensorBoard (rank 0 only)."""

import json
import logging
import os
from pathlib import Path

from segfast.config import TrainConfig
from segfast.train.distributed import DistEnv

log = logging.getLogger("segfast")


def _truncated(path: Path, step: int) -> Path:
    """Rewrites `path` (atomically) without the records of steps after `step` and without a torn
    last line; returns it."""
    if not path.exists():
        return path
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
    return path


class Logger:
    """Progress bar (rank 0), JSONL metrics, optional TensorBoard. metrics.jsonl keeps the
    records of steps <= start (the resumed step; 0 for a fresh run), so steps a resumed run
    replays are never there twice."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, start: int):
        self.env, self.jsonl, self.bar, self.tb = env, None, None, None
        if not env.is_main:
            return
        out = Path(cfg.run.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(_truncated(out / "metrics.jsonl", start), "a")
        from tqdm import tqdm

        self.bar = tqdm(total=cfg.run.total_steps, initial=start, desc="train", dynamic_ncols=True)
        if cfg.run.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                log.warning("segfast: run.tensorboard=true but tensorboard is not installed; logging JSONL only")

    def log(self, record: dict) -> None:
        if not self.env.is_main:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(k, v, record["step"])

    def advance(self, show: dict) -> None:
        if self.env.is_main:
            self.bar.set_postfix(show, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.env.is_main:
            self.bar.close()
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
