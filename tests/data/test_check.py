"""`segfast data check` on the tiny fake layouts the readers' tests build (tests/data/layouts.py):
it passes on them, names every removed piece with what the reader expected there, and
docs/data.md is rendered from the same declarations."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from segfast import registry
from segfast.cli import main
from segfast.data import check
from segfast.data.check import MISSING, NO_FILES, OK, WARN
from tests.data import layouts as build
from tests.data.llmseg_layouts import box, write_llmseg40k

ROOT = Path(__file__).resolve().parents[2]


def _build(name: str, root: Path, gen) -> tuple:
    """(root, options, splits) of a tiny fake folder the layout's readers read."""
    if name == "reasonseg":
        build.reasonseg(root, "val")
        return root, {}, ["val"]
    if name in ("refcoco", "refcoco+", "refcocog", "refclef"):
        build.refer(root)
        split_by = check.get(name).readers["referring"]["split_by"]
        if name != "refcoco":
            (root / "refcoco").rename(root / name)
            (root / name / "refs(unc).p").rename(root / name / f"refs({split_by}).p")
        if name == "refclef":  # the ImageCLEF images
            (root / "images" / "train2014").rename(root / "images" / "saiapr_tc-12")
        return root, {}, None
    if name == "llmseg40k":
        target = box(30, 50, 0, 0, 20, 20)
        coco = {"b.jpg": ("coco", (30, 50), [("what is left?", "cup", target)])}
        write_llmseg40k(root, "validation", {**coco, "e.jpg": ("ego_objects", (30, 50), [("here?", "box", ~target)])})
        return root, {}, ["val"]
    if name == "ade20k":
        build.ade20k(root, "validation")
        return root, {}, ["validation"]
    if name == "cocostuff":
        build.cocostuff(root, "val2017")
        return root, {}, ["val2017"]
    if name == "pascal5i":
        build.pascal_lists(root, build.pascal_tree(root, gen))
        return root, {}, None
    if name == "coco20i":
        build.coco20i(root, gen, "val2014")
        return root, {}, ["val"]
    if name in ("coco-instances", "lvis"):  # COCO-style instances (PACO's parts in them)
        build.paco(root, "instances.json")
        return root, {"annotations": "instances.json", "images": "."}, None
    if name == "pascal-panoptic-parts":
        build.panoptic_parts(root)
        return root, {}, ["training"]
    if name == "visual-genome":
        build.visual_genome(root)
        return root, {"masks": "masks.json"}, None
    if name == "mrseg":
        build.mrseg(root)
        return root, {}, None
    simple = {
        "cityscapes": (build.cityscapes, ["val"]),
        "mapillary": (build.mapillary, ["validation"]),
        "pascal-context-59": (build.pascal_context, ["validation"]),
        "pascal-context-459": (build.pascal_context, ["validation"]),
        "pascal-voc-20": (build.pascal_voc20, ["validation"]),
        "grefcoco": (build.grefcoco, ["val"]),
        "openimages": (build.openimages, ["train"]),
        "pascal-part": (build.pascal_part, None),
    }
    if name in simple:
        make, splits = simple[name]
        make(root)
        return root, {}, splits
    if name == "paco-lvis":
        build.paco_lvis(root, root / "coco")
        return root, {"images": "coco"}, None
    if name == "llava-instruct":
        build.llava_instruct(root)
        return root, {"images": "coco"}, None
    if name == "llafs-captions":
        build.png(root / "cc3m" / "a.jpg", np.zeros((20, 30, 3), np.uint8))
        (root / "annotations.json").write_text(json.dumps([{"image": "cc3m/a.jpg", "caption": ["a box", "grey"]}]))
        return root, {}, None
    raise AssertionError(f"no fake layout for {name}: add a builder to tests/data/layouts.py")


def _levels(report) -> dict:
    return {(split, f.path): f.level for split, f in report.findings}


@pytest.mark.parametrize("name", sorted(check.layouts()))
def test_every_layout_passes_on_its_fake_folder_and_names_each_removed_piece(name, tmp_path, gen):
    root, options, splits = _build(name, tmp_path / "data", gen)
    report = check.check(name, root, splits, options)
    assert not report.missing, report.text()
    assert any(f.level == OK for _, f in report.findings)
    layout = check.get(name)
    values = {**layout.options, **options}
    for need in [n for n in layout.needs if n.required]:
        split = (splits or list(layout.splits))[0]
        rel = need.path.format(**values, split=layout.splits[split]).rstrip("/")
        if rel == ".":  # the root itself (images="."): nothing to remove
            continue
        broken = tmp_path / "broken"
        shutil.copytree(root, broken)
        for target in [broken / alternative for alternative in rel.split("|")]:  # "a|b": either file
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        report = check.check(name, broken, [split], options)
        missing = [f for f in report.missing if f.path.rstrip("/") == rel]
        assert missing, f"{name}: removing {rel} went unnoticed:\n{report.text()}"
        assert need.what in missing[0].message
        shutil.rmtree(broken)


def test_the_fake_folders_are_the_ones_the_readers_read(tmp_path, gen):
    """The check asks the reader: what passes is read, and a label map the reader misses is named
    with the reader's own words."""
    root, _, _ = _build("ade20k", tmp_path / "ade", gen)
    layout = check.get("ade20k")
    reader, options = "semantic-queries", layout.readers["semantic-queries"]
    ds = registry.build_dataset(reader, {**options, "root": str(root)}, "eval", 0)
    assert len(ds) == 1
    (root / "annotations" / "validation" / "a.png").unlink()
    build.png(root / "annotations" / "validation" / "c.png", np.zeros((2, 2), np.uint8))  # not an empty folder
    report = check.check("ade20k", root, ["validation"])
    assert [f.message for f in report.missing] == [
        "the reader cannot read this split: root: 1 label maps are missing, e.g. "
        f"{root / 'annotations' / 'validation' / 'a.png'}"
    ]
    with pytest.raises(FileNotFoundError, match="label maps are missing"):
        registry.build_dataset(reader, {**options, "root": str(root)}, "eval", 0)


def test_counts_against_the_published_ones_and_files_the_annotations_name(tmp_path, gen):
    root, _, _ = _build("refcoco", tmp_path / "refer", gen)
    report = check.check("refcoco", root)
    text = report.text()
    assert "split val:" in text and "2 refs (published: 3,811; differs)" in text
    assert "3 expressions (published: 10,834; differs)" in text
    assert "all 1 files the annotations name are there" in text
    assert _levels(report)[("train", "")] == WARN  # no train refs in the fake: a warning, not a failure
    (root / "images" / "train2014" / "c.jpg").rename(root / "images" / "train2014" / "d.jpg")
    report = check.check("refcoco", root, ["val"])
    assert [(f.path, f.message) for f in report.missing] == [
        ("images/train2014", "1 of the 1 files the annotations name are missing, e.g. c.jpg")
    ]


def test_sampled_parses_catch_labels_out_of_range(tmp_path, gen):
    from PIL import Image

    root, _, splits = _build("ade20k", tmp_path / "ade", gen)
    report = check.check("ade20k", root, splits)
    assert "sampled 1: 30x20 RGB" in report.text() and "sampled 1: 3 label values" in report.text()
    Image.fromarray(np.full((20, 30), 151, np.uint8)).save(root / "annotations" / "validation" / "a.png")
    report = check.check("ade20k", root, splits)
    assert [(f.path, f.message) for f in report.missing] == [
        ("annotations/validation/a.png", "unreadable: label values [151] beyond 150 (ignore: [])")
    ]


def test_cli_lists_checks_and_exits_nonzero_naming_the_missing_piece(tmp_path, gen, capsys):
    assert main(["data", "check"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in check.layouts()) and "toy-tokens" in listed
    root, _, _ = _build("reasonseg", tmp_path / "rs", gen)
    assert main(["data", "check", "--dataset", "reasonseg", "--root", str(root), "--split", "val"]) == 0
    assert "everything the readers need is there" in capsys.readouterr().out
    assert main(["data", "check", "--dataset", "reasonseg", "--root", str(root), "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert "MISSING test: no folder; the reader expects <name>.json annotations" in out
    assert "1 required piece missing" in out
    with pytest.raises(SystemExit, match="no layout named 'refcoc'"):
        main(["data", "check", "--dataset", "refcoc", "--root", str(root)])
    with pytest.raises(SystemExit, match="has no split 'vall'"):
        main(["data", "check", "--dataset", "reasonseg", "--root", str(root), "--split", "vall"])
    with pytest.raises(SystemExit, match="takes no option 'images'"):
        main(["data", "check", "--dataset", "reasonseg", "--root", str(root), "images=x"])


def test_every_registered_dataset_has_a_layout_or_reads_no_files():
    read = {r for layout in check.layouts().values() for r in layout.readers}
    assert set(registry.datasets()) <= read | set(NO_FILES), "declare a Layout beside the new reader"
    assert read <= set(registry.datasets())


def test_docs_data_md_is_current():
    """Regenerate with `segfast data docs --out docs/data.md`."""
    assert (ROOT / "docs" / "data.md").read_text() == check.render_docs()
    text = check.render_docs()
    for name, layout in check.layouts().items():
        assert f"## {name}: " in text and layout.download.split(" ")[0] in text
        assert all(f"`{n.path}`" in text for n in layout.needs)


def test_json_sampler_names_the_absent_field(tmp_path, gen):
    root, _, splits = _build("reasonseg", tmp_path / "rs", gen)
    (root / "val" / "b.json").write_text(json.dumps({"shapes": []}))
    report = check.check("reasonseg", root, splits)
    assert ("val/b.json", "unreadable: no field 'text'") in [(f.path, f.message) for f in report.missing]
    assert MISSING in report.text()


def test_alternatives_optional_pieces_and_matching_counts(tmp_path, monkeypatch):
    from segfast.data.layout import LAYOUTS, Index, Layout, Need

    layout = Layout(
        name="tiny",
        title="a made-up layout",
        download="-",
        readers={},
        needs=(
            Need("refs.json|refs.p", "the refs, in either format"),
            Need("extra.csv", "optional class names", required=False),
            Need("img/{split}", "the images", files="*.jpg"),
        ),
        splits={"train": "tr"},
        index=lambda root, split, options: Index({"refs": 2}),
        published={"train": {"refs": 2, "img/{split}": 3}},
    )
    monkeypatch.setitem(LAYOUTS, "tiny", layout)
    (tmp_path / "img" / "tr").mkdir(parents=True)
    (tmp_path / "img" / "tr" / "a.jpg").write_bytes(b"")
    report = check.check("tiny", tmp_path)
    assert [(f.path, f.level) for f in report.missing] == [("refs.json|refs.p", MISSING)]
    assert "no file (any of them); the reader expects the refs, in either format here" in report.text()
    assert _levels(report)[("", "extra.csv")] == WARN
    (tmp_path / "refs.p").write_bytes(b"")
    report = check.check("tiny", tmp_path)
    assert not report.missing and _levels(report)[("", "refs.p")] == OK
    text = report.text()
    assert "2 refs (published: 2)\n" in text and "1 *.jpg (published: 3; differs)" in text
