"""Random choices are drawn anew every epoch, the same in every process, loader worker and
rerun; the loader's data position resumes exactly, on any number of processes."""

import hashlib

import numpy as np
import pytest
import torch

from segfast.data import DATASETS, collate
from segfast.data.loader import make_loader

pytest.importorskip("segment_anything")


def fingerprint(sample: dict) -> str:
    def raw(v):
        return v.numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v).encode()

    return hashlib.sha256(b"".join(k.encode() + raw(sample[k]) for k in sorted(sample))).hexdigest()


def _epoch(dataset, epoch: int, n: int) -> list:
    dataset.set_epoch(epoch)
    return [fingerprint(dataset[i]) for i in range(n)]


def _refer_root(tmp_path):
    """A refer layout with one image, three referents of three sentences each."""
    from tests.models.seg_family import square_masks, write_refer

    masks = square_masks(48, [(2, 2, 20, 20), (25, 5, 45, 30), (5, 30, 40, 46)])
    refs = [
        {"split": "train", "ann_id": k, "image_id": 1, "sentences": [{"sent": f"w{k} {j}"} for j in range(3)]}
        for k in range(3)
    ]
    anns = [
        {"id": k, "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]]}
        for k, (x0, y0, x1, y1) in enumerate([(2, 2, 20, 20), (25, 5, 45, 30), (5, 30, 40, 46)])
    ]
    write_refer(tmp_path, (np.stack([masks[0]] * 3, -1) * 200).astype(np.uint8), refs, anns)
    return tmp_path


@pytest.mark.parametrize(
    "name, options",
    [
        ("seg-conversations", {"length": 6}),
        ("semantic-queries", {"length": 6}),
        ("multiround", {"length": 6}),
        ("toy-tokens", {"size": 6}),
        (
            "mixture",
            {
                "length": 6,
                "datasets": [
                    {"name": "seg-conversations", "options": {"length": 3}},
                    {"name": "toy-tokens", "options": {"size": 3}},
                ],
            },
        ),
    ],
)
def test_two_epochs_differ_and_an_epoch_replays_identically(name, options):
    dataset = DATASETS[name](options, "train", 0)
    first, second = _epoch(dataset, 0, 6), _epoch(dataset, 1, 6)
    assert first != second  # LISA, LaSagnA, SegLLM draw anew on every access
    assert _epoch(dataset, 0, 6) == first
    assert _epoch(DATASETS[name](options, "train", 0), 1, 6) == second  # a rerun draws the same


def test_refcoco_conversations_reach_every_sentence_over_epochs(tmp_path):
    dataset = DATASETS["seg-conversations"](
        {
            "format": "refcoco",
            "root": str(_refer_root(tmp_path)),
            "sentences_per_image": 1,
            "image_size": 32,
            "clip_size": 16,
        },
        "train",
        0,
    )
    asked = set()
    for epoch in range(40):
        dataset.set_epoch(epoch)
        asked.add(dataset[0]["conversations"][0][0]["question"])
    sentences = {f"w{k} {j}" for k in range(3) for j in range(3)}
    assert all(any(f" {s} " in q for q in asked) for s in sentences)  # fixed forever before: one of nine


def test_fewshot_training_episodes_are_redrawn_every_epoch(tmp_path, gen):
    from segfast.data.fewshot import FewShotEpisodes
    from tests.data.layouts import pascal_tree

    pascal_tree(tmp_path, gen)
    episodes = FewShotEpisodes(tmp_path, "pascal", fold=0, split="val", size=32, episodes=6)
    assert _epoch(episodes, 0, 6) != _epoch(episodes, 1, 6)


def test_loader_workers_see_the_epoch():
    dataset = DATASETS["seg-conversations"]({"length": 8}, "train", 0)

    def batches(workers):
        loader = make_loader(dataset, 2, 0, 1, seed=0, epoch=3, num_workers=workers)
        return [fingerprint(b) for b in loader]

    assert batches(2) == batches(0)


def test_position_reshards_exactly_on_another_process_count():
    """1 process reads 3 micro-batches of 2; 2 and 3 processes read the rest: every sample of the
    epoch exactly once (2 of 14 dropped only because whole rounds are read)."""
    dataset = DATASETS["toy-tokens"]({"size": 14, "seq_len": 8, "min_len": 8}, "train", 0)

    def indices(world, start):
        out = []
        for rank in range(world):
            for b in make_loader(dataset, 2, rank, world, seed=0, epoch=0, start=start):
                out += [tuple(x) for x in b["input_ids"].tolist()]
        return out

    whole = indices(1, 0)
    assert len(whole) == 14
    read = indices(1, 0)[:6]
    for world in (2, 3):
        rest = indices(world, 6)
        assert not set(rest) & set(read) and len(rest) == len(set(rest))
        assert len(rest) == (14 - 6) // (2 * world) * 2 * world
        assert set(rest) <= set(whole)


def test_collate_pads_variable_lengths_of_an_epoch():
    dataset = DATASETS["toy-tokens"]({"size": 4, "seq_len": 12, "min_len": 4}, "train", 0)
    dataset.set_epoch(5)
    batch = collate([dataset[i] for i in range(4)])
    assert batch["attention_mask"].sum(1).tolist() == [len(dataset[i]["input_ids"]) for i in range(4)]
