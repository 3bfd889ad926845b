"""LLM-Seg: heads, losses and selection on hand-made cases; the data layouts; a training step
of the full tiny model through segfast.train."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything")

import segfast  # noqa: E402
from segfast.config import LoraConfig, ModelConfig  # noqa: E402
from segfast.data import DATASETS, collate  # noqa: E402
from segfast.data.referring import ReferringSegmentation  # noqa: E402
from segfast.models import MODELS  # noqa: E402
from segfast.models.llmseg.heads import iop_loss, iou_alignment_loss, select, similarity  # noqa: E402
from tests.data.layouts import llmseg40k  # noqa: E402
from tests.models.seg_family import train_tiny, write_refer  # noqa: E402


def test_selection_strategies_on_hand_made_cases():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3, 0.2, 0.8, 0.0]])
    iop = torch.tensor([[0.9, 0.2, 0.7, 0.1, 0.95, 0.6, 0.99]])
    valid = torch.tensor([[True] * 6 + [False]])
    as_list = lambda m: m[0].nonzero()[:, 0].tolist()  # noqa: E731
    assert as_list(select(scores, iop, valid, "top1_iou")) == [1]
    assert as_list(select(scores, iop, valid, "iop_threshold", 0.65)) == [0, 2, 4]  # 6 is padding
    assert as_list(select(scores, iop, valid, "top1_iou+iop_threshold", 0.65)) == [0, 1, 2, 4]
    # top-5 by score: 1, 5, 2, 3, 4 -> IoP > 0.65 among them: 2, 4
    assert as_list(select(scores, iop, valid, "top5_iou_iop_threshold", 0.65)) == [2, 4]
    # none of the top 5 passes -> the top-1
    assert as_list(select(scores, iop, valid, "top5_iou_iop_threshold", 0.999)) == [1]
    with pytest.raises(ValueError, match="strategy"):
        select(scores, iop, valid, "best")


def test_losses_match_their_equations():
    gen = torch.Generator().manual_seed(0)
    scores, gt = torch.rand(2, 5, generator=gen), torch.rand(2, 5, generator=gen)
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    expected = 0.0
    for b in range(2):
        p = torch.softmax(scores[b][valid[b]] / 0.05, 0)
        q = torch.softmax(gt[b][valid[b]] / 0.05, 0)
        expected += (p * (p / q).log()).sum() / 2
    torch.testing.assert_close(iou_alignment_loss(scores, gt, valid, 0.05), expected)
    pred = torch.rand(2, 5, generator=gen)
    g = gt[valid]
    torch.testing.assert_close(iop_loss(pred, gt, valid), (torch.exp(g - 1) * (pred[valid] - g) ** 2).mean())
    assert iou_alignment_loss(gt, gt, valid).abs() < 1e-6  # aligned scores cost nothing
    seg = torch.randn(2, 8, generator=gen)
    props = torch.randn(2, 5, 8, generator=gen)
    torch.testing.assert_close(similarity(props, seg), torch.cosine_similarity(props, seg[:, None], dim=-1))


def _tiny(**options):
    cfg = ModelConfig(name="llm-seg", lora=LoraConfig(r=4, alpha=8), options=options)
    return MODELS["llm-seg"](cfg)


def test_training_step_gradients_reach_lora_fusion_and_heads():
    model = _tiny()
    batch = collate([ReferringSegmentation(length=4)[i] for i in range(2)])
    losses = model(batch)
    assert set(losses) == {"text", "iou", "iop"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for part in ("lora_B", "fusion.", "iop_head.", "seg_fc.", "project.", "visual."):
        names = [n for n in grads if part in n]
        assert names, part
        assert any(grads[n] is not None and grads[n].abs().sum() > 0 for n in names), part
    assert not any(p.requires_grad for p in model.dinov2.parameters())
    out = model.predict(batch)
    assert out["masks"].shape == batch["gt_mask"].shape and out["chosen"].sum(1).eq(1).all()


def test_trains_through_segfast_train(tmp_path):
    records = train_tiny(tmp_path, {"name": "llm-seg"}, {"name": "referring", "options": {"length": 16}}, steps=3)
    assert any("eval/iou/gIoU" in r for r in records)


def test_synthetic_sample_contains_its_target():
    ds = DATASETS["referring"]({"image_size": 64, "max_proposals": 12}, "train", 0)
    s = ds[3]
    assert s["proposals"].shape == (12, 64, 8) and s["proposal_valid"].sum() >= 4
    assert s["query"].startswith("segment the ") and s["gt_mask"].any()
    dense = segfast.ops.unpack_masks(s["proposals"][s["proposal_valid"]], 64)
    assert any(torch.equal(m, s["gt_mask"]) for m in dense)


def _proposals_json(path: Path, masks: np.ndarray):
    from pycocotools import mask as mask_utils

    anns = []
    for m in masks:
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append({"segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}, "area": int(m.sum())})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"height": masks.shape[1], "width": masks.shape[2], "annotations": anns}))


def _square(y0, x0, y1, x1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_reasonseg_llmseg40k_and_refcoco_layouts(tmp_path):
    image = np.zeros((40, 60, 3), np.uint8)
    masks = np.zeros((2, 40, 60), bool)
    masks[0, 10:20, 10:30] = True
    masks[1, 25:35, 40:55] = True
    # ReasonSeg
    (tmp_path / "rs" / "val").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "rs" / "val" / "a.jpg")
    (tmp_path / "rs" / "val" / "a.json").write_text(
        json.dumps(
            {
                "text": ["what holds the drink?"],
                "is_sentence": True,
                "shapes": [
                    {"label": "target", "points": _square(10, 10, 20, 30)},
                    {"label": "ignore", "points": _square(0, 0, 5, 5)},
                ],
            }
        )
    )
    _proposals_json(tmp_path / "props" / "val" / "a.json", masks)
    # LLM-Seg40K
    llmseg40k(tmp_path / "l40", "train", ["the thing on the right"], [sum(_square(25, 40, 35, 55), [])], (40, 60))
    _proposals_json(tmp_path / "props40" / "images" / "b.json", masks)
    # refCOCO (refer layout)
    write_refer(
        tmp_path / "rc",
        image,
        [
            {"split": "val", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "left block"}]},
            {"split": "train", "ann_id": 7, "image_id": 1, "sentences": [{"sent": "x"}]},
        ],
        [{"id": 7, "segmentation": [sum(_square(10, 10, 20, 30), [])]}],
    )
    _proposals_json(tmp_path / "propsrc" / "images" / "train2014" / "c.json", masks)

    cases = [
        ("reasonseg", "rs", "props", "val", 0, "what holds the drink?"),
        ("llmseg40k", "l40", "props40", "train", 1, "the thing on the right"),
        ("refcoco", "rc", "propsrc", "val", 0, "left block"),
    ]
    for fmt, root, props, split, target, query in cases:
        ds = ReferringSegmentation(
            fmt, str(tmp_path / root), split, str(tmp_path / props), image_size=40, max_proposals=4
        )
        assert len(ds) == 1
        s = ds[0]
        assert s["query"] == query and s["proposal_valid"].tolist() == [True, True, False, False]
        dense = segfast.ops.unpack_masks(s["proposals"], 40)
        iou = segfast.ops.mask_iou(dense[:2], s["gt_mask"][None])[:, 0]
        assert iou.argmax() == target and iou.max() > 0.8, (fmt, iou)
    # the engine evaluates on split "eval": the files' val (or eval_split)
    for fmt, root, props in (("reasonseg", "rs", "props"), ("refcoco", "rc", "propsrc")):
        evaluation = ReferringSegmentation(fmt, str(tmp_path / root), "eval", str(tmp_path / props))
        assert len(evaluation) == 1
        s = evaluation[0]  # what the metrics read at the original resolution
        assert s["original_proposals"].shape == (2, 40, 8) and s["original_masks"].shape == (1, 40, 60)
        assert s["original_masks"][0, 10:20, 10:30].all() and int(s["original_masks"].sum()) == 200
    assert (
        len(
            ReferringSegmentation(
                "llmseg40k", str(tmp_path / "l40"), "eval", str(tmp_path / "props40"), eval_split="train"
            )
        )
        == 1
    )
    with pytest.raises(ValueError, match="proposals"):
        ReferringSegmentation("reasonseg", str(tmp_path / "rs"), "val", "")
    with pytest.raises(FileNotFoundError, match="root"):
        ReferringSegmentation("reasonseg", str(tmp_path / "nope"), "val", str(tmp_path))


def test_shipped_llmseg_config_loads():
    from segfast.train import load_config

    cfg = load_config(Path(__file__).parents[2] / "configs" / "llmseg.yaml")
    assert cfg.model.name in MODELS and cfg.data.name in DATASETS and cfg.model.options["image_size"] == 896
