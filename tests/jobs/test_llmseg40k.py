"""LLM-Seg40K's generation pipeline (segfast llmseg40k) on tiny fake LVIS and EgoObjects layouts:
the sampling rules, the Fig. 4 prompt and its parser, masks, the splits in the released format
(read back by the LLM-Seg40K reader), resuming, and the real local-model path (tiny LLaVA
describer, tiny Llama writer and tiny SAM saved to disk)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segfast.jobs.llmseg40k import COUNTS, SPLITS, generate, split_sizes
from segfast.text.llmseg40k import TEMPLATE, parse_questions, question_prompt

pytest.importorskip("pycocotools")


def _poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _sources(root):
    """LVIS: images 1 and 4 have 3 and 2 categories (simple: 2 to 5), image 2 has 6 (complex: more
    than 5), image 3 one (neither); EgoObjects: image 10 has 3 categories, image 11 two (too few)."""
    (root / "coco").mkdir(parents=True)
    (root / "ego").mkdir()
    names = [f"thing{k}" for k in range(8)]
    images, anns = [], []
    cats = {1: [0, 1, 2], 2: [0, 1, 2, 3, 4, 5], 3: [7], 4: [3, 4]}
    for i, cs in cats.items():
        name = f"{i:012d}.jpg"
        Image.fromarray(np.full((40, 50, 3), 30 * i, np.uint8)).save(root / "coco" / name)
        images.append(
            {"id": i, "coco_url": f"http://images.cocodataset.org/train2017/{name}", "height": 40, "width": 50}
        )
        for k in cs:  # two instances of category 0: the mask is their union
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": k, "segmentation": _poly(k, 0, k + 5, 10)})
        anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cs[0], "segmentation": _poly(20, 20, 30, 30)})
    lvis = root / "lvis_v1_train.json"
    lvis.write_text(
        json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": k, "name": n} for k, n in enumerate(names)]}
        )
    )
    ego_images, ego_anns = [], []
    for i, cs in {10: [0, 1, 2], 11: [0, 1]}.items():
        Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(root / "ego" / f"e{i}.jpg")
        ego_images.append({"id": i, "file_name": f"e{i}.jpg", "height": 40, "width": 50})
        for k in cs:
            ego_anns.append({"id": len(ego_anns) + 1, "image_id": i, "category_id": k, "bbox": [5 * k, 5, 10, 8]})
    ego = root / "ego.json"
    ego.write_text(
        json.dumps(
            {
                "images": ego_images,
                "annotations": ego_anns,
                "categories": [{"id": k, "name": f"ego {n}"} for k, n in enumerate(["mug", "phone", "key"])],
            }
        )
    )
    return {
        "lvis": str(lvis),
        "coco_images": str(root / "coco"),
        "egoobjects": str(ego),
        "egoobjects_images": str(root / "ego"),
    }


def _objects(prompt: str) -> list:
    return prompt.split("[Important Objects]:\n\n")[-1].split("\n\n[Questions]:")[0].split(" | ")


def _writer(prompt: str) -> str:
    first, second = _objects(prompt)[:2]
    return (
        f"1. [Q]: What is used for this? [A]: {first}\n2. [Q]: And what else is? [A]: {first.upper()}.\n"
        f"3. [Q]: A third one for it? [A]: {first}\n4. [Q]: Where is the unicorn? [A]: unicorn\n"
        f"5. [Q]: Which keeps things? [A]: {second}"
    )


def _boxes(image, boxes):
    masks = np.zeros((len(boxes), *image.shape[:2]), bool)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[int(y0) : int(y1), int(x0) : int(x1)] = True
    return masks


def test_the_prompt_is_fig4_and_the_parser_keeps_the_rules():
    prompt = question_prompt("Two men stand by a road.", ["helmet", "stop_sign"])
    assert prompt.startswith("I want you to act as an image data annotator.") and prompt.endswith("[Questions]:\n")
    assert (
        "[Summary]:\n\nTwo men stand by a road.\n\n[Important Objects]:\n\nhelmet | stop_sign\n\n[Questions]:" in prompt
    )
    assert TEMPLATE.count("[Q]:") == 5 and "7. You should not generate more than 2 different questions" in TEMPLATE
    kept, dropped = parse_questions(_writer(prompt), ["helmet", "stop_sign"])
    assert kept == [
        {"question": "What is used for this?", "answer": "helmet"},
        {"question": "And what else is?", "answer": "helmet"},  # "HELMET." names it too
        {"question": "Which keeps things?", "answer": "stop_sign"},
    ]
    assert [why for *_, why in dropped] == [
        "more than 2 questions for this answer",
        "answer is not one of the important objects",
    ]
    assert parse_questions("I cannot help with that.", ["helmet"]) == ([], [])
    assert parse_questions("1. [Q]: What stops cars? [A]: stop sign", ["stop_sign"])[0][0]["answer"] == "stop_sign"


def test_pipeline_samples_asks_masks_and_writes_the_released_format(tmp_path):
    from segfast.data.referring import read_llmseg40k

    sources = _sources(tmp_path / "src")
    seen = []

    def describer(image):
        seen.append(image.shape)
        return f"An image of {image.shape[1]} by {image.shape[0]} pixels."

    counts = {"simple": 5, "complex": 5, "egoobjects": 5}
    with pytest.warns(UserWarning, match="only 2 simple LVIS images"):
        report = generate(
            tmp_path / "out",
            **sources,
            describer=describer,
            writer=_writer,
            segmenter=_boxes,
            counts=counts,
            splits={"train": 1, "validation": 1, "test": 1},
            device="cpu",
        )
    sample = json.loads((tmp_path / "out" / "sample.json").read_text())["images"]
    assert sorted((s["key"], s["kind"], len(s["categories"])) for s in sample) == [
        ("coco/000000000001.jpg", "simple", 3),
        ("coco/000000000002.jpg", "complex", 6),
        ("coco/000000000004.jpg", "simple", 2),
        ("ego_objects/e10.jpg", "egoobjects", 3),
    ]
    assert report["described"] == report["asked"] == report["masked"] == 4 and seen == [(40, 50, 3)] * 4
    assert [report[s]["images"] for s in ("train", "validation", "test")] == [2, 1, 1]
    assert report["train"]["questions_per_image"] == 3
    root = tmp_path / "out"  # the released layout: <root>/LLMSeg-40K/<split>.json, images under two roots
    for name in ("coco/train2017", "ego_objects/images"):
        (root / name).mkdir(parents=True)
    entries = [e for split in ("train", "val", "test") for e in read_llmseg40k(root, split)]
    assert len(entries) == 12 and {e["answer"] for e in entries} >= {"thing0", "thing1", "ego key", "ego mug"}
    from segfast.data.coco_masks import segmentation_mask

    for e in entries:
        mask = segmentation_mask(e["segmentation"], 40, 50).numpy()
        if e["answer"] == "thing0":  # both instances of the category: two boxes
            assert mask.sum() == 5 * 10 + 10 * 10 and mask[25, 25]
        if e["answer"] == "ego mug":  # SAM's box masks (here the box itself)
            assert mask.sum() == 10 * 8 and mask[5:13, 0:10].all()
    # the questions record what was dropped and the model's raw answer
    questions = [json.loads(line) for line in (root / "questions" / "part-00000.jsonl").read_text().splitlines()]
    assert all(len(q["dropped"]) == 2 and q["raw"].startswith("1. [Q]:") for q in questions)


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    sources = _sources(tmp_path / "src")
    calls = []

    def describer(image):
        calls.append(1)
        return "A picture."

    common = dict(
        **sources, writer=_writer, segmenter=_boxes, counts={"simple": 1, "complex": 1, "egoobjects": 1}, device="cpu"
    )
    generate(tmp_path / "out", describer=describer, stages=("sample", "describe"), **common)
    assert len(calls) == 3  # one simple, one complex, one EgoObjects image
    part = tmp_path / "out" / "descriptions" / "part-00000.jsonl"
    lines = part.read_text().splitlines()
    part.write_text(lines[0] + "\n" + lines[1][:10])  # killed while writing the second record
    report = generate(tmp_path / "out", describer=describer, **common)
    assert len(calls) == 5 and report["described"] == 2 and report["asked"] == 3  # only the missing two again
    again = generate(tmp_path / "out", describer=describer, **common)
    assert len(calls) == 5 and again["described"] == again["asked"] == again["masked"] == 0
    with pytest.raises(ValueError, match="--writer"):
        generate(tmp_path / "other", **sources, describer=describer, stages=("sample", "ask"), device="cpu")


def test_paper_counts_and_split_sizes_keep_their_proportions():
    """§4.2.1: 6000 simple + 4000 complex LVIS images and 3000 EgoObjects; §4.3: 11K / 1K / 2K."""
    assert COUNTS == {"simple": 6000, "complex": 4000, "egoobjects": 3000}
    assert split_sizes(14000, SPLITS) == {"train": 11000, "validation": 1000, "test": 2000}
    assert split_sizes(140, SPLITS) == {"train": 110, "validation": 10, "test": 20}


def _save_describer(directory, words):
    from transformers import AutoTokenizer, CLIPImageProcessor, LlavaProcessor

    from segfast.models.llava import save_tiny_llava

    save_tiny_llava(directory, words)
    template = (
        "{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=AutoTokenizer.from_pretrained(directory),
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    ).save_pretrained(directory)


def _save_writer(directory, words):
    from segfast.models.tiny import tiny_llama, word_tokenizer

    tokenizer = word_tokenizer(words)
    tokenizer.chat_template = (
        "{% for m in messages %}USER: {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    torch.manual_seed(0)
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def test_local_transformers_models_fill_every_role(tmp_path, capsys):
    """The command line with a tiny LLaVA as describer, a tiny Llama as writer and a tiny SAM for
    EgoObjects' boxes, all loaded from disk; a second run has nothing left to do."""
    import re

    from segfast.cli import main
    from segfast.models.sam.build import save_sam, tiny_sam
    from segfast.text.llmseg40k import DESCRIBE

    words = sorted(set(re.findall(r"\w+|[^\w\s]", TEMPLATE + DESCRIBE)) | {"USER", "ASSISTANT"})
    _save_describer(tmp_path / "describer", words)
    _save_writer(tmp_path / "writer", words)
    sam = save_sam(tiny_sam(), tmp_path / "sam.pth")
    sources = _sources(tmp_path / "src")
    args = ["llmseg40k", "--out", str(tmp_path / "out"), "--device", "cpu", "--seed", "3"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in sources.items()]
    args += ["--describer", str(tmp_path / "describer"), "--writer", str(tmp_path / "writer"), "--sam-type", "tiny"]
    args += ["--sam-checkpoint", str(sam), "--simple", "1", "--complex", "1", "--egoobjects-count", "1"]
    args += ["--describe-tokens", "6", "--ask-tokens", "6"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sampled"] == 3 and report["described"] == 3 and report["asked"] == 3
    descriptions = [
        json.loads(line) for line in (tmp_path / "out" / "descriptions" / "part-00000.jsonl").read_text().splitlines()
    ]
    assert len(descriptions) == 3 and all(isinstance(d["description"], str) for d in descriptions)
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["described"] == again["asked"] == again["masked"] == 0
