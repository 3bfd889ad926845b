"""Each benchmark protocol on a tiny fake layout: the queries, prompt and ignore rule LISA's
ValDataset uses, IoU at the image's original resolution, and a registry whose paper numbers are
the papers' own."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from segfast.data import DATASETS
from segfast.frames import frame_masks, score_at_original, to_original, valid_size
from segfast.metrics import IoUMeter
from segfast.train.protocols import PROTOCOLS
from tests.data.layouts import ade20k, pascal_tree, reasonseg, refer

pytest.importorskip("segment_anything")

PAPERS = Path(__file__).resolve().parents[3] / "shared" / "papers"


def test_refer_benchmark_asks_every_sentence_as_its_own_fixed_question(tmp_path):
    root = refer(tmp_path)
    ds = DATASETS["seg-conversations"](
        {"format": "refcoco", "root": str(root), "image_size": 64, "clip_size": 16}, "eval", 0
    )
    samples = [ds[i] for i in range(len(ds))]
    assert len(samples) == 3  # every sentence of every referent of val, not <= 3 random referents per image
    assert [s["conversations"] for s in samples] == [
        [[{"question": f"<image>\n What is {q} in this image? Please output segmentation mask.", "answer": "[SEG]."}]]
        for q in ("left block", "red one", "right")
    ]  # LISA's ValDataset writes "<image>\n " before the question
    first = samples[0]
    assert first["original_masks"].shape == (1, 30, 50) and int(first["original_masks"].sum()) == 20 * 20
    assert not first["original_ignore"].any() and first["masks"].shape == (1, 64, 64)


def test_reasonseg_benchmark_reads_text0_is_sentence_and_ignore_as_lisa(tmp_path):
    root = reasonseg(tmp_path)
    ds = DATASETS["seg-conversations"](
        {"format": "reasonseg", "root": str(root), "image_size": 64, "clip_size": 16}, "eval", 0
    )
    assert len(ds) == 2  # one query per json: text[0]
    a, b = ds[0], ds[1]
    assert (
        a["conversations"][0][0]["question"]
        == "<image>\n What is the left block in this image? Please output segmentation mask."
    )
    assert b["conversations"][0][0]["question"] == (
        "<image>\n What could hold a drink? Please output segmentation mask."
    )
    target, ignore = a["original_masks"][0], a["original_ignore"]
    assert ignore[10:16, 10:16].all() and int(ignore.sum()) == 36  # "Ignore" (any case): 255, not background
    assert not target[10:15, 10:15].any() and target[0:10, 0:10].all()  # the smaller shape wins its pixels
    assert target[0:10, 30:40].all()  # "person" is a target too
    assert not target[20:30, 40:50].any() and not ignore[20:30, 40:50].any()  # "flag" is skipped
    # training reads the same file with LISA's training rule: the target only, ignore as background
    train = DATASETS["seg-conversations"](
        {"format": "reasonseg", "root": str(root), "image_size": 64, "explanatory": -1, "eval_split": "val"}, "val", 0
    )
    assert "original_ignore" not in train[0] and not (train[0]["original_masks"] & ignore).any()


def test_every_reader_of_the_referring_benchmarks_scores_the_same_queries(tmp_path):
    root = reasonseg(tmp_path / "rs")
    queries = DATASETS["seg-queries"]({"format": "reasonseg", "root": str(root)}, "eval", 0)
    assert [queries.request(i)["query"] for i in range(len(queries))] == ["the left block", "What could hold a drink?"]
    assert queries[0]["original_ignore"].sum() == 36


def test_reasonseg_shapes_are_drawn_as_get_mask_from_json_draws_them():
    """LISA's get_mask_from_json: vertices truncated to int32, OpenCV's 1-px outline and fill
    (boundary pixels included), shapes painted by np.argsort(areas)[::-1] (equal areas: the later
    shape first, so the earlier one keeps the overlap)."""
    from segfast.data.referring import annotation_masks

    box = [[1.7, 1.2], [6.6, 1.2], [6.6, 4.8], [1.7, 4.8]]
    target, _ = annotation_masks({"shapes": [{"label": "target", "points": box}]}, 6, 8)
    expect = torch.zeros(6, 8, dtype=torch.bool)
    expect[1:5, 1:7] = True  # (1, 1)-(6, 4), both ends included
    assert torch.equal(target, expect)
    shapes = [
        {"label": "target", "points": [[0, 0], [4, 0], [4, 4], [0, 4]]},
        {"label": "ignore", "points": [[2, 2], [6, 2], [6, 6], [2, 6]]},
    ]
    target, ignore = annotation_masks({"shapes": shapes}, 8, 8)
    assert int(target.sum()) == 25 and int(ignore.sum()) == 25 - 9 and target[2:5, 2:5].all()


def test_scoring_at_the_original_resolution_and_not_in_the_frame():
    """Two images of different sizes: cIoU weighs each by its own pixel count, which the 64-pixel
    frame would distort; the logits go back through the unpadded crop."""
    size = 64
    gts = [torch.zeros(1, 30, 50, dtype=torch.bool), torch.zeros(1, 120, 40, dtype=torch.bool)]
    gts[0][0, :15, :25] = True
    gts[1][0, :60, :] = True
    preds = [gts[0].clone(), torch.zeros_like(gts[1])]
    preds[0][0, :15, 25:] = True  # 375 px too many on the small image
    preds[1][0, :15, :] = True  # a quarter of the large target
    batch = {
        "valid_size": torch.tensor([valid_size(30, 50, size), valid_size(120, 40, size)]),
        "original_masks": gts,
        "original_ignore": [torch.zeros(30, 50, dtype=torch.bool), torch.zeros(120, 40, dtype=torch.bool)],
    }
    logits = [frame_masks(p, size).float() * 20 - 10 for p in preds]
    meter = IoUMeter()
    score_at_original(meter, logits, batch)
    assert meter.compute()["cIoU"] == pytest.approx((375 + 600) / (750 + 2400), abs=0.01)
    framed = IoUMeter()
    for p, g in zip(preds, gts):
        framed.update(frame_masks(p, size), frame_masks(g, size))
    assert abs(framed.compute()["cIoU"] - meter.compute()["cIoU"]) > 0.02  # the frame changes the weights
    back = to_original(logits[1], batch["valid_size"][1], (120, 40))
    assert (back ^ preds[1]).float().mean() < 0.02  # the way back: crop, resize, > 0


def test_ignored_pixels_count_in_neither_prediction_nor_target():
    pred = torch.zeros(1, 4, 4, dtype=torch.bool)
    pred[0, :, :2] = True
    gt = torch.zeros_like(pred)
    gt[0, :2, :2] = True
    ignore = torch.zeros(4, 4, dtype=torch.bool)
    ignore[2:, :] = True
    meter = IoUMeter()
    meter.update(pred, gt, ignore=ignore)
    assert meter.compute()["cIoU"] == 1.0  # without the ignore rule: 4 / 8


def test_benchmark_protocols_fix_their_data_and_refuse_changes():
    from segfast.config import ConfigError, load_config
    from segfast.train.protocols import get

    protocol = get("refcoco+-testB")
    lisa_mixture = {
        "name": "mixture",
        "options": {
            "datasets": [
                {"name": "seg-conversations", "options": {"format": "reasonseg", "root": "/rs", "image_size": 1024}},
                {"name": "seg-conversations", "options": {"format": "refcoco", "root": "/refer", "image_size": 1024}},
            ]
        },
    }
    data = protocol.data_section(lisa_mixture)
    assert data == {
        "name": "seg-conversations",
        "options": {
            "format": "refcoco",
            "root": "/refer",
            "image_size": 1024,
            "dataset": "refcoco+",
            "split_by": "unc",
            "eval_split": "testB",
        },
    }
    cfg = load_config(base={"data": data}, overrides=["data.options.eval_split=val"])
    with pytest.raises(ConfigError, match=r"refcoco\+-testB fixes data.options.eval_split='testB'"):
        protocol.check(cfg.data)
    with pytest.raises(ConfigError, match="no reader"):
        get("ade20k-val").data_section(lisa_mixture)
    with pytest.raises(ConfigError, match=r"--benchmark 'refcoco-tesA'.*did you mean refcoco-testA"):
        get("refcoco-tesA")


@pytest.mark.skipif(not PAPERS.is_dir(), reason="the papers are not beside this checkout")
def test_every_reported_number_is_in_its_paper():
    files = {
        "LaSagnA": "lasagna.txt",
        "LLaVASeg": "llavaseg.txt",
        "SegLLM": "segllm.txt",
        "LLM-Seg": "llm-seg.txt",
        "LLaFS": "llafs.txt",
    }
    for protocol in PROTOCOLS.values():
        for r in protocol.reported:
            text = (PAPERS / files[r.paper]).read_text()
            table = re.search(rf"{r.table}[.:]", text)
            assert table, (protocol.name, r)
            assert re.search(rf"(?<![\d.]){re.escape(str(r.value))}(?![\d])", text), (protocol.name, r)
    assert sum(len(p.reported) for p in PROTOCOLS.values()) > 80


def test_every_referring_and_reasoning_protocol_reads_its_own_split(tmp_path):
    """One fake layout with refCOCO, refCOCO+ and refCOCOg (UNC/UMD) and ReasonSeg val/test: each
    protocol, through a LISA checkpoint's data config, scores exactly its split's queries."""
    import pickle
    import shutil

    from segfast.train.protocols import get

    refer(tmp_path / "refer")
    for dataset, split_by in (("refcoco+", "unc"), ("refcocog", "umd")):
        shutil.copytree(tmp_path / "refer" / "refcoco", tmp_path / "refer" / dataset)
        (tmp_path / "refer" / dataset / "refs(unc).p").rename(tmp_path / "refer" / dataset / f"refs({split_by}).p")
    refs = [
        {"split": split, "ann_id": 1, "image_id": 1, "sentences": [{"sent": f"{split} {k}"} for k in range(n)]}
        for split, n in (("val", 1), ("testA", 2), ("testB", 3), ("test", 4))
    ]
    for dataset, split_by in (("refcoco", "unc"), ("refcoco+", "unc"), ("refcocog", "umd")):
        with open(tmp_path / "refer" / dataset / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f)
    reasonseg(tmp_path / "rs")
    shutil.copytree(tmp_path / "rs" / "val", tmp_path / "rs" / "test")
    (tmp_path / "rs" / "test" / "b.json").unlink()
    lisa = {
        "name": "mixture",
        "options": {
            "datasets": [
                {"name": "seg-conversations", "options": {"format": "refcoco", "root": str(tmp_path / "refer")}},
                {"name": "seg-conversations", "options": {"format": "reasonseg", "root": str(tmp_path / "rs")}},
            ]
        },
    }
    expected = {"val": 1, "testA": 2, "testB": 3, "test": 4}
    for name in [n for n in PROTOCOLS if n.startswith(("refcoco", "reasonseg"))]:
        protocol = get(name)
        data = protocol.data_section(lisa)
        dataset = DATASETS[data["name"]](data["options"], "eval", 0)
        split = protocol.data["eval_split"]
        assert len(dataset) == (expected[split] if name.startswith("refcoco") else {"val": 2, "test": 1}[split]), name
        question = dataset[len(dataset) - 1]["conversations"][0][0]["question"]
        assert question.endswith("Please output segmentation mask."), name


def test_llmseg40k_ade20k_and_fewshot_protocols_read_their_layouts(tmp_path, gen):
    """The other protocol families through a checkpoint's data config, on tiny fake layouts."""
    from segfast.train.protocols import get
    from tests.data.llmseg_layouts import box, proposals_json, write_llmseg40k

    def build(name, data):
        section = get(name).data_section(data)
        return DATASETS[section["name"]](section["options"], "eval", 0)

    # LLM-Seg40K val (validation.json): every question of every annotation, proposals at SAM's resolution
    target = box(30, 50, 0, 0, 20, 20)
    write_llmseg40k(
        tmp_path / "l40",
        "validation",
        {"b.jpg": ("coco", (30, 50), [("what is left?", "cup", target), ("the thing", "box", ~target)])},
    )
    proposals_json(tmp_path / "p40" / "coco" / "train2017" / "b.json", np.stack([target, box(30, 50, 0, 0, 5, 5)]))
    llmseg = {
        "name": "referring",
        "options": {
            "format": "reasonseg",
            "root": str(tmp_path / "l40"),
            "proposals": str(tmp_path / "p40"),
            "image_size": 32,
        },
    }
    ds = build("llmseg40k-val", llmseg)
    assert [ds[i]["conversations"][0][0]["question"] for i in range(len(ds))] == [
        "<image>\n what is left? Please output segmentation mask.",  # LISA's ValDataset writes "\n "
        "<image>\n the thing Please output segmentation mask.",
    ]
    assert ds[0]["proposals"].shape == (2, 50, 8) and ds[0]["gt_iou"].tolist() == [[1.0, 0.0625]]
    assert ds[1]["original_masks"].shape == (1, 30, 50) and ds[1]["gt_iop"].tolist() == [[0.0, 0.0]]
    # ADE20K val: the validation folder, every class of objectInfo150.csv
    ade = tmp_path / "ade"
    ade20k(ade, "validation", names=("wall", "sky"))
    lasagna = {
        "name": "mixture",
        "options": {
            "datasets": [
                {
                    "name": "semantic-queries",
                    "options": {"format": "cocostuff", "root": "/elsewhere", "image_size": 32},
                },
                {"name": "semantic-queries", "options": {"format": "ade20k", "root": str(ade), "image_size": 32}},
            ]
        },
    }
    ds = build("ade20k-val", lasagna)
    assert len(ds) == 1 and ds.classes == ["wall", "sky"]
    # PASCAL-5i fold 0, 1-shot: 1000 episodes x 5 seeds of the fold's classes (BAM)
    pascal_tree(tmp_path / "voc", gen)
    llafs = {"name": "fewshot", "options": {"root": str(tmp_path / "voc"), "size": 32, "episodes": 8}}
    ds = build("pascal5i-fold0-1shot", llafs)
    assert len(ds) == 5000 and ds.classes == [1, 2] and ds.shots == 1 and ds[4999]["episode_run"] == 4
