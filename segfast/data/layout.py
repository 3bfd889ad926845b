"""What a dataset reader expects under its root, declared once beside the reader (`declare`) and
used twice: `segfast data check` (segfast.data.check) walks it on a user's folder, and
`segfast data docs` renders it into docs/data.md.

A Layout lists its Needs (files and folders relative to the root; "{split}" and the layout's
options are filled in per split), where the official download comes from, which registered
datasets read it, and the published counts to compare with. Its `index` runs the reader's own
parsing of the annotation files (no image is decoded) and says what they count and which files
they name, so the check asks the same code that training will.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Need:
    """One file or folder a reader needs."""

    path: str  # relative to the root, {split} and the layout's options filled in; "a|b": either file
    what: str  # what the reader reads there (the report and docs/data.md say it)
    files: str = ""  # a folder: the pattern of the files it holds ("*.jpg"); "" = a single file
    required: bool = True  # False: the reader works without it (the report warns)
    sample: Callable | None = None  # path -> short description, or raises; run on a few files


@dataclass(frozen=True)
class Index:
    """What a reader found in the annotation files of one split."""

    counts: dict  # what -> number, e.g. {"refs": 3811, "expressions": 10834}
    files: tuple = ()  # the files (absolute paths) the annotations name: they must exist


@dataclass(frozen=True)
class Layout:
    name: str  # `segfast data check --dataset NAME`
    title: str
    download: str  # where the official files come from
    readers: dict  # registered dataset -> its data.options for this layout (root aside)
    needs: tuple  # Need, ...
    splits: dict = field(default_factory=lambda: {"": ""})  # split name -> the word {split} becomes
    options: dict = field(default_factory=dict)  # further path placeholders and their defaults
    index: Callable | None = None  # (root: Path, split: str, options: dict) -> Index
    published: dict = field(default_factory=dict)  # split -> {what: count} (what: an Index count or a Need's path)
    source: str = ""  # where the published counts come from
    notes: str = ""


LAYOUTS: dict = {}


def declare(*layouts: Layout) -> None:
    """Adds layouts (by name; a later declaration replaces an earlier one)."""
    for layout in layouts:
        LAYOUTS[layout.name] = layout


def image_size(path: Path) -> str:
    """Reads an image's header only: "WxH MODE"."""
    from PIL import Image

    with Image.open(path) as im:
        return f"{im.width}x{im.height} {im.mode}"


def label_values(top: int, ignore: tuple = (255,)) -> Callable:
    """A sampler for label maps: decodes one and raises when a value lies above `top` and is not
    an ignore value."""

    def sample(path: Path) -> str:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            values = np.unique(np.asarray(im))
        bad = [int(v) for v in values if v > top and v not in ignore]
        if bad:
            raise ValueError(f"label values {bad[:5]} beyond {top} (ignore: {list(ignore)})")
        return f"{len(values)} label values"

    return sample
