"""The region-attribute tables of LLaFS's fine-grained instruction (segfast llafs-tables), with
scripted stand-ins for the LLM and CLIP, and a tiny open_clip CLIP saved in OpenAI's format."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from segfast.data.fewshot import FewShotEpisodes
from segfast.jobs.llafs_tables import AMBIGUITY, DISCRIMINATIVE, MORE, make_tables, parse_classes, parse_has

COLOURS = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0]}


class ColourMatcher:
    """CLIP stand-in: a crop's feature is its mean colour over non-zero pixels; a phrase's is the
    colour word it names."""

    def image_features(self, crops):
        return torch.stack([c.flatten(1)[:, c.flatten(1).sum(0) > 0].mean(1) for c in crops])

    def text_features(self, texts):
        return torch.tensor([next((v for k, v in COLOURS.items() if k in t), [-1.0, -1.0, -1.0]) for t in texts])


def _two_colour_tree(root):
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClassAug").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for i in range(3):
        rgb = np.full((40, 48, 3), 128, np.uint8)
        labels = np.zeros((40, 48), np.uint8)
        rgb[10:30, 8:24] = (255, 0, 0)  # the object's left half is red, its right half blue
        rgb[10:30, 24:40] = (0, 0, 255)
        labels[10:30, 8:40] = 1
        Image.fromarray(rgb).save(root / "JPEGImages" / f"im{i}.png".replace(".png", ".jpg"), quality=100)
        Image.fromarray(labels).save(root / "SegmentationClassAug" / f"im{i}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("im0\nim1\nim2\n")


def test_answers_are_parsed_as_the_paper_formats_them():
    assert parse_has("A horse has a sleek coat, a long tail, and four legs with hooves.") == [
        "a sleek coat",
        "a long tail",
        "four legs with hooves",
    ]
    assert parse_classes("The following classes also have them: Cheetah, Panther, Domestic Cat.") == [
        "Cheetah",
        "Panther",
        "Domestic Cat",
    ]
    assert parse_classes("No.") == [] and parse_has("I cannot say.") == []


def test_tables_match_regions_refine_iteratively_and_resume(tmp_path):
    _two_colour_tree(tmp_path / "voc")
    data = FewShotEpisodes(tmp_path / "voc", "pascal", 0, 1, "val", 32, augment=False)
    asked = []
    answers = {
        "Except": "The following classes also have them: bird, kite.",
        "What does aeroplane look different": "aeroplane has a green nose.",  # matches nothing
        "Apart from": "aeroplane has blue engines.",  # matches the right half
    }

    def ask(prompt):
        asked.append(prompt)
        return next(v for k, v in answers.items() if prompt.startswith(k))

    out = tmp_path / "tables.jsonl"
    attributes = {"aeroplane": ["red wings", "a white body"]}
    made = make_tables(data, out, ColourMatcher(), ask, attributes, scales=(50,))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert made == 3 and [r["key"] for r in rows] == ["im0__1", "im1__1", "im2__1"]
    row = rows[0]
    assert row["iterations"] == 2 and row["ambiguous"] == ["bird", "kite"]
    assert row["attributes"] == ["red wings", "a white body", "a green nose", "blue engines"]
    found = {tuple(r["attributes"]) for r in row["regions"]}
    assert found == {("blue engines",), ("red wings",)}  # Eq. 1: only the matched regions are listed
    red = next(r for r in row["regions"] if r["attributes"] == ["red wings"])
    assert np.array(red["polygon"]).shape == (16, 2) and np.array(red["polygon"])[:, 0].max() <= 25
    assert asked[0] == AMBIGUITY.format(name="aeroplane", partial="(red wings)")
    assert asked[1] == DISCRIMINATIVE.format(name="aeroplane", classes="(bird, kite)")
    assert asked[2] == MORE.format(name="aeroplane", classes="(bird, kite)", found="(a green nose)")
    asked.clear()
    assert make_tables(data, out, ColourMatcher(), ask, attributes, scales=(50,)) == 0 and not asked  # resumed
    one = tmp_path / "one.jsonl"
    make_tables(data, one, ColourMatcher(), ask, attributes, iterations=1, scales=(50,), limit=1)
    assert {tuple(r["attributes"]) for r in json.loads(one.read_text())["regions"]} == {("red wings",)}
    eight = tmp_path / "eight.jsonl"  # LLaFS Fig. 5: the regions as 8-point polygons
    make_tables(data, eight, ColourMatcher(), ask, attributes, iterations=1, scales=(50,), limit=1, num_vertices=8)
    assert {np.array(r["polygon"]).shape for r in json.loads(eight.read_text())["regions"]} == {(8, 2)}

    # the dataset reads them: each support's table in the episode's frame, the instruction cites it
    episodes = FewShotEpisodes(tmp_path / "voc", "pascal", 0, 1, "val", 32, episodes=2, tables=str(out))
    sample = episodes[0]
    regions = sample["support_tables"][0]
    assert len(regions) == len(row["regions"]) and sample["attributes"] == row["attributes"]
    assert float(regions[0]["polygon"][:, 0].max()) <= 32 and float(regions[0]["polygon"][:, 1].max()) <= 32
    from segfast.models.llafs.prompts import task_instruction

    text = task_instruction(
        sample["support_polygons"], 32, "aeroplane", sample["attributes"], sample["support_tables"], 32
    )
    assert "aeroplane has red wings, a white body, a green nose, blue engines." in text
    assert ") is red wings" in text and ") is blue engines" in text


def test_clip_matcher_and_encoder_read_openai_checkpoints(tmp_path):
    """open_clip builds a CLIP from an OpenAI-format state dict (RN50.pt's layout); the LLaFS
    encoder takes its ModifiedResNet's stages 2-4, and the matcher its two towers."""
    open_clip = pytest.importorskip("open_clip")
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    clip = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=[1, 1, 1, 1], width=16, image_size=64),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    )
    path = tmp_path / "RN-tiny.pt"
    torch.save(clip.state_dict(), path)
    from segfast.models.llafs.encoder import ImageEncoder

    enc = ImageEncoder("clip-rn50", str(path))
    feats = enc(torch.rand(1, 3, 64, 64))
    assert feats.shape == (1, 16 * 8 + 16 * 16 + 16 * 32, 8, 8) and enc.out_channels == feats.shape[1]
    w = clip.visual.layer2[0].conv1.weight  # OpenAI checkpoints are fp16: open_clip reads them through it
    torch.testing.assert_close(enc.stages[0][0].conv1.weight, w.half().float())
    loaded = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    from segfast.jobs.llafs_tables import clip_matcher

    matcher = clip_matcher.__new__(clip_matcher)  # the same methods over the loaded model
    matcher.model, matcher.tokenizer, matcher.size, matcher.device = (
        loaded.eval(),
        open_clip.get_tokenizer("RN50"),
        64,
        "cpu",
    )
    from segfast.frames import CLIP_MEAN, CLIP_STD

    matcher.mean, matcher.std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    assert matcher.image_features([torch.rand(3, 20, 30)]).shape == (1, 32)
    assert matcher.text_features(["A photo of a tail"]).shape == (1, 32)


def test_a_local_llm_answers_through_transformers(tmp_path):
    from segfast.jobs.llafs_tables import ATTRIBUTES, local_llm
    from tests.train.conftest import write_tiny_llm

    ask = local_llm(str(write_tiny_llm(tmp_path)), max_new_tokens=4)
    answer = ask(ATTRIBUTES.format(name="cat"))
    assert isinstance(answer, str) and answer == ask(ATTRIBUTES.format(name="cat"))  # greedy: repeatable
