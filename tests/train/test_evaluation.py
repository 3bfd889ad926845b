"""Evaluation scores every sample exactly once, on any number of processes: 1, 2 and 3 gloo
processes give identical metrics on a set whose size is prime."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from segfast.train.evaluation import eval_slots, evaluate, take


class Scoring(torch.nn.Module):
    """A model whose loss and masks depend on each sample: its IoU is a function of the sample's
    first token, so summed meters tell exactly which samples were scored, and how often."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return {"loss": (self.w * batch["input_ids"][:, 0].float()).mean()}

    def evaluate(self, batch, meters):
        from segfast.metrics import MIoUMeter

        first = batch["input_ids"][:, 0]
        gt = torch.zeros(len(first), 8, 8, dtype=torch.bool)
        gt[:, :4] = True
        pred = torch.zeros_like(gt)
        for i, t in enumerate(first.tolist()):
            pred[i, : t % 8] = True
        meters["iou"].update(pred, gt)
        # a meter a model creates in its hook (as LaSagnA's mIoU): it must exist on every process
        meters.setdefault("miou", MIoUMeter(3)).update(first[:, None] % 3, torch.zeros_like(first[:, None]))


def _config(micro: int):
    from segfast.config import load_config

    return load_config(overrides=[f"run.micro_batch_size={micro}", "run.global_batch_size=6", "run.device=cpu"])


def _dataset(size: int):
    from segfast.data import DATASETS

    return DATASETS["toy-tokens"]({"size": size, "seq_len": 6, "vocab_size": 64}, "eval", 0)


def _worker(rank: int, world: int, port: int, size: int, micro: int, out: str):
    from segfast.train.distributed import init_distributed, shutdown

    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    env = init_distributed("cpu")
    try:
        torch.manual_seed(0)
        model = Scoring()
        result = evaluate(model, model, _dataset(size), _config(micro), env, "fp32", batches=0)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        shutdown(env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate_on(world: int, size: int, micro: int, tmp_path) -> dict:
    out = tmp_path / f"world{world}.json"
    mp.spawn(_worker, args=(world, _free_port(), size, micro, str(out)), nprocs=world, join=True)
    return json.loads(out.read_text())


def test_one_two_and_three_processes_give_identical_metrics_on_a_prime_sized_set(tmp_path):
    results = [_evaluate_on(world, 7, 2, tmp_path) for world in (1, 2, 3)]
    assert results[0]["eval/samples"] == 7 and results[0]["eval/iou/samples"] == 7
    assert results[0] == results[1] == results[2]  # nothing dropped, nothing counted twice
    assert "eval/miou/mIoU" in results[0]


def test_shards_cover_every_index_once_and_padding_is_cut():
    for size in (1, 2, 7, 11):
        for world in (1, 2, 3, 5):
            shards = [eval_slots(size, r, world) for r in range(world)]
            assert len({len(s) for s in shards}) == 1  # the same number of batches everywhere
            assert sorted(i for s in shards for i in s if i is not None) == list(range(size))
    batch = {"input_ids": torch.arange(6).view(3, 2), "names": ["a", "b", "c"], "scalar": torch.tensor(1.0)}
    cut = take(batch, [True, False, True])
    assert cut["input_ids"].tolist() == [[0, 1], [4, 5]] and cut["names"] == ["a", "c"] and cut["scalar"] == 1.0


def test_single_process_evaluation_scores_every_sample(tmp_path):
    from segfast.train.distributed import DistEnv

    torch.manual_seed(0)
    model = Scoring()
    result = evaluate(model, model, _dataset(7), _config(2), DistEnv(), "fp32", batches=0)
    assert result["eval/samples"] == 7
    limited = evaluate(model, model, _dataset(7), _config(2), DistEnv(), "fp32", batches=2)
    assert limited["eval/samples"] == 4  # run.eval_batches micro-batches per process


def test_meters_only_another_process_created_are_added_empty(monkeypatch):
    """A label space one process never saw (LaSagnA's miou/<format>) still syncs on every process."""
    import torch.distributed as dist

    from segfast.metrics import IoUMeter, MIoUMeter
    from segfast.train.distributed import DistEnv
    from segfast.train.evaluation import _same_meters

    theirs = {"iou": IoUMeter(), "miou/ade20k": MIoUMeter(150)}
    theirs["miou/ade20k"].state += 7

    def all_gather_object(out, mine):
        out[0], out[1] = mine, theirs

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)
    meters = {"iou": IoUMeter(), "miou/synthetic": MIoUMeter(4)}
    meters["iou"].state += 3
    _same_meters(meters, DistEnv(world_size=2))
    assert sorted(meters) == ["iou", "miou/ade20k", "miou/synthetic"]
    assert int(meters["iou"].state.sum()) == 12 and meters["miou/ade20k"].state.shape == (1, 2, 150)
