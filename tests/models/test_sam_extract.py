"""`segfast proposals` end to end on generated images (CPU, tiny SAM)."""

import importlib
import json

import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything")

from segfast.cli import main  # noqa: E402
from segfast.data.proposals import load_proposals  # noqa: E402
from segfast.models.sam import ProposalGenerator, tiny_sam  # noqa: E402
from segfast.ops import unpack_masks  # noqa: E402
from segfast.train.distributed import DistEnv  # noqa: E402
from tests.models.sam_fixtures import blob_image  # noqa: E402

ARGS = [
    "--model-type",
    "tiny",
    "--points-per-side",
    "8",
    "--pred-iou-thresh",
    "0",
    "--stability-score-thresh",
    "0",
    "--top-k",
    "7",
    "--workers",
    "0",
]


def _images(root, n=4):
    for i in range(n):
        (root / f"d{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(blob_image(i, 90 + 10 * i, 130)).save(root / f"d{i % 2}" / f"im{i}.png")
    return root


def test_extract_resume_and_load(tmp_path, capsys):
    images, out = _images(tmp_path / "images"), tmp_path / "out"
    assert main(["proposals", "--images", str(images), "--out", str(out), *ARGS]) == 0
    files = sorted(out.rglob("*.json"))
    assert [f.relative_to(out).as_posix() for f in files] == [
        "d0/im0.json",
        "d0/im2.json",
        "d1/im1.json",
        "d1/im3.json",
    ]
    data = json.loads(files[0].read_text())
    assert (data["height"], data["width"]) == (90, 130) and data["seconds"] > 0
    areas = [r["area"] for r in data["annotations"]]
    assert 0 < len(areas) <= 7 and areas == sorted(areas, reverse=True)
    # The stored RLE decodes to the generator's own largest masks.
    packed, records, size = load_proposals(files[0])
    assert size == (90, 130) and len(records) == len(packed)
    expected = ProposalGenerator(
        tiny_sam(), points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0
    ).generate_batch([blob_image(0, 90, 130)])[0]
    expected = expected.top_k_by_area(7)
    assert torch.equal(unpack_masks(packed, 130), expected.masks())
    assert main(["proposals", "--images", str(images), "--out", str(out), *ARGS]) == 0
    assert "0 images done, 4 already there" in capsys.readouterr().out


def test_shards_by_rank(tmp_path, monkeypatch):
    images = _images(tmp_path / "images")
    monkeypatch.setattr(
        importlib.import_module("segfast.jobs.proposals"),
        "init_distributed",
        lambda device: DistEnv(rank=1, world_size=2),
    )
    assert main(["proposals", "--images", str(images), "--out", str(tmp_path / "out"), *ARGS]) == 0
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.json")) == [
        "im2.json",
        "im3.json",
    ]  # sorted paths 1 and 3


def test_bad_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="images"):
        main(["proposals", "--images", str(tmp_path / "nope"), "--out", str(tmp_path), *ARGS])


def test_unreadable_images_are_recorded_and_skipped_not_fatal(tmp_path, capsys):
    images, out = _images(tmp_path / "images", n=3), tmp_path / "out"
    (images / "d0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (images / "d1" / "empty.jpg").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"cannot read .*broken\.png"):
        assert main(["proposals", "--images", str(images), "--out", str(out), *ARGS, "--image-batch", "2"]) == 0
    printed = capsys.readouterr().out
    assert "3 images done, 0 already there, 2 failed" in printed and "d0/broken.png" in printed
    assert sorted(f.relative_to(out).as_posix() for f in out.rglob("im*.json")) == [
        "d0/im0.json",
        "d0/im2.json",
        "d1/im1.json",
    ]
    recorded = json.loads((out / "failed-rank0.json").read_text())
    assert [r["image"] for r in recorded] == ["d0/broken.png", "d1/empty.jpg"] and all(r["error"] for r in recorded)
    # a resume does not die on them either: they are tried again, the rest is skipped
    with pytest.warns(UserWarning, match="cannot read"):
        assert main(["proposals", "--images", str(images), "--out", str(out), *ARGS]) == 0
    assert "0 images done, 3 already there, 2 failed" in capsys.readouterr().out
    (images / "d0" / "broken.png").unlink()
    (images / "d1" / "empty.jpg").unlink()
    assert main(["proposals", "--images", str(images), "--out", str(out), *ARGS]) == 0
    assert not (out / "failed-rank0.json").exists()


def test_large_images_are_scaled_to_1024_with_inter_area_first(tmp_path):
    """LLM-Seg's prepare_datasets: longer side > 1024 -> cv2.resize(..., INTER_AREA) with the size
    truncated, then SAM; the file records both sizes; 50 proposals by default."""
    import cv2

    from segfast.jobs.proposals import arguments

    image = blob_image(5, 700, 1100)
    (tmp_path / "images").mkdir()
    Image.fromarray(image).save(tmp_path / "images" / "big.png")
    out = tmp_path / "out"
    args = [a for a in ARGS if a not in ("--top-k", "7")]
    assert main(["proposals", "--images", str(tmp_path / "images"), "--out", str(out), *args]) == 0
    data = json.loads((out / "big.json").read_text())
    assert (data["height"], data["width"], data["original_height"], data["original_width"]) == (651, 1024, 700, 1100)
    scaled = cv2.resize(image, (1024, 651), interpolation=cv2.INTER_AREA)
    expected = ProposalGenerator(tiny_sam(), points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    expected = expected.generate_batch([scaled])[0].top_k_by_area(50)
    packed, _, size = load_proposals(out / "big.json")
    assert size == (651, 1024) and data["top_k"] == 50 and torch.equal(unpack_masks(packed, 1024), expected.masks())
    import argparse

    parser = argparse.ArgumentParser()
    arguments(parser)
    defaults = parser.parse_args(["--images", "x", "--out", "y"])
    assert (defaults.top_k, defaults.max_side) == (50, 1024)
