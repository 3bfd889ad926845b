"""`segfast predict`: one image, a folder, a JSON list of pairs; the files it writes; errors."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from segfast.cli import main
from tests.inference.tiny import picture, tiny_checkpoint


@pytest.fixture(scope="module")
def lisa(tmp_path_factory):
    checkpoint, _ = tiny_checkpoint(tmp_path_factory.mktemp("lisa") / "ckpt", "lisa")
    return checkpoint


def images(folder, n: int):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(picture(30 + 5 * i, 50, i)).save(folder / f"img{i}.png")
    return sorted(folder.glob("*.png"))


SHORT = ["--settings", '{"generate": {"max_new_tokens": 4}}']  # a random model's answers, cut short


def lines(out) -> list:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_one_image_two_questions(lisa, tmp_path, capsys):
    (a,) = images(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(lisa), "--image", str(a), "--query", "Segment the box.",
                 "--query", "Segment the dog.", "--out", str(out), "--quiet"]) == 0  # fmt: skip
    assert "2 prediction(s) of lisa" in capsys.readouterr().out
    logged = lines(out)
    assert [e["image"] for e in logged] == ["img0", "img0_q1"]
    assert [e["query"] for e in logged] == ["Segment the box.", "Segment the dog."]
    for stem in ("img0", "img0_q1"):
        record = json.loads((out / f"{stem}.json").read_text())
        assert (record["height"], record["width"]) == (30, 50)
        assert len(record["masks"]) == len(list(out.glob(f"{stem}_mask*.png")))
        assert Image.open(out / f"{stem}_overlay.png").size == (50, 30)


def test_folder_in_batches_and_pairs_json(lisa, tmp_path):
    paths = images(tmp_path / "in", 3)
    out = tmp_path / "folder"
    main(["predict", "--checkpoint", str(lisa), "--images", str(tmp_path / "in"), "--query", "Segment the box.",
          "--out", str(out), "--batch-size", "2", "--quiet", *SHORT])  # fmt: skip
    assert sorted(e["image"] for e in lines(out)) == ["img0", "img1", "img2"]
    listing = tmp_path / "in" / "pairs.json"
    listing.write_text(json.dumps([{"image": p.name, "query": f"Segment the box {i}."} for i, p in enumerate(paths)]))
    out = tmp_path / "pairs"
    main(["predict", "--checkpoint", str(lisa), "--pairs", str(listing), "--out", str(out), "--quiet", *SHORT])
    assert [(e["image"], e["query"]) for e in lines(out)] == [(f"img{i}", f"Segment the box {i}.") for i in range(3)]
    for i in range(3):
        masks = [np.asarray(Image.open(p)) for p in sorted(out.glob(f"img{i}_mask*.png"))]
        assert all(m.shape == (30 + 5 * i, 50) for m in masks)


def test_errors_name_the_argument(lisa, tmp_path):
    (a,) = images(tmp_path / "in", 1)
    base = ["predict", "--checkpoint", str(lisa), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit, match="--query is required"):
        main(base + ["--image", str(a)])
    with pytest.raises(SystemExit, match="exactly one of --image, --images, --pairs"):
        main(base + ["--image", str(a), "--images", str(tmp_path), "--query", "x"])
    with pytest.raises(SystemExit, match="--support: expected IMAGE:MASK"):
        main(base + ["--image", str(a), "--query", "x", "--support", "nocolon"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="--images: no .* files"):
        main(base + ["--images", str(tmp_path / "empty"), "--query", "x"])
    with pytest.raises(SystemExit, match="--images: .* is not a directory"):
        main(base + ["--images", str(tmp_path / "nowhere"), "--query", "x"])


@pytest.mark.slow
def test_segllm_chat_rounds_and_llafs_support(tmp_path, monkeypatch):
    (a,) = images(tmp_path / "in", 1)
    segllm, _ = tiny_checkpoint(tmp_path / "segllm", "segllm")
    out = tmp_path / "chat"
    main(["predict", "--checkpoint", str(segllm), "--image", str(a), "--chat", "--query", "Please segment the box.",
          "--query", "Segment the dog below the box.", "--out", str(out), "--quiet", *SHORT])  # fmt: skip
    assert [(e["image"], e["query"]) for e in lines(out)] == [
        ("img0_r0", "Please segment the box."),
        ("img0_r1", "Segment the dog below the box."),
    ]
    # rounds typed on standard input, until an empty line (LISA's chat.py loop)
    monkeypatch.setattr("sys.stdin", io.StringIO("Please segment the box.\nSegment the dog below the box.\n\n"))
    main(["predict", "--checkpoint", str(segllm), "--image", str(a), "--chat", "--out", str(tmp_path / "typed"),
          "--quiet", *SHORT])  # fmt: skip
    assert [e["text"] for e in lines(tmp_path / "typed")] == [e["text"] for e in lines(out)]
    llafs, _ = tiny_checkpoint(tmp_path / "llafs", "llafs", num_query_tokens=4, image_size=32, max_objects=1)
    mask = np.zeros((30, 50), np.uint8)
    mask[5:20, 10:30] = 1
    Image.fromarray(mask).save(tmp_path / "in" / "m.png")
    listing = tmp_path / "in" / "pairs.json"
    listing.write_text(json.dumps([{"image": "img0.png", "query": "box", "support": [["img0.png", "m.png"]]}]))
    out = tmp_path / "fewshot"
    support = f"{a}:{tmp_path / 'in' / 'm.png'}"
    main(["predict", "--checkpoint", str(llafs), "--image", str(a), "--query", "box", "--support", support,
          "--out", str(out), "--quiet"])  # fmt: skip
    main(["predict", "--checkpoint", str(llafs), "--pairs", str(listing), "--out", str(out / "p"), "--quiet"])
    for folder in (out, out / "p"):
        assert np.asarray(Image.open(folder / "img0_mask0.png")).shape == (30, 50)
