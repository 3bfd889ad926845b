"""`segfast data check`: walks a declared Layout (segfast.data.layout) on a folder and says what
is there (files, counts against the published ones, a few sampled parses), what is missing and
where the reader expected it; `segfast data docs` renders every layout into docs/data.md.

Cheap by design: existence and directory listings, the reader's own parsing of the annotation
files (the reader's `index`), and `samples` files per folder opened (image headers, a few label
maps). No model, no decoding of every image.
"""

import os
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from segfast import registry
from segfast.data.layout import LAYOUTS, Layout, Need

OK, WARN, MISSING = "ok", "warn", "MISSING"
# registered datasets that read no files
NO_FILES = {
    "toy-tokens": "generated token sequences",
    "llafs-pseudo": "generated support-query pairs (LLaFS's pseudo data)",
    "mixture": "draws from other datasets; check each of them",
}


@dataclass
class Finding:
    level: str  # OK, WARN or MISSING
    path: str  # relative to the root ("" = the root itself)
    message: str


@dataclass
class Report:
    layout: Layout
    root: Path
    findings: list = field(default_factory=list)  # (split, Finding)

    def add(self, split: str, level: str, path: str, message: str) -> None:
        self.findings.append((split, Finding(level, path, message)))

    @property
    def missing(self) -> list:
        return [f for _, f in self.findings if f.level == MISSING]

    def text(self) -> str:
        lines = [f"{self.layout.name}: {self.layout.title}, at {self.root}"]
        current = None
        for split, f in self.findings:
            if split != current:
                current = split
                if split:
                    lines.append(f"split {split}:")
            where = f"{f.path}: " if f.path else ""
            lines.append(f"  {f.level:<8}{where}{f.message}")
        n = len(self.missing)
        lines.append(
            f"{n} required piece{'s' if n != 1 else ''} missing: the readers cannot use this folder"
            if n
            else "everything the readers need is there"
        )
        return "\n".join(lines)


def layouts() -> dict:
    """Every declared layout (the reader modules declare them on import)."""
    registry.discover()
    return dict(LAYOUTS)


def get(name: str) -> Layout:
    known = layouts()
    if name not in known:
        raise KeyError(f"--dataset: no layout named {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def _listing(folder: Path, pattern: str) -> list:
    """Sorted names of the files under `folder` matching `pattern` ("*.jpg", or "*/*.png" for one
    level of subfolders)."""
    if "/" in pattern:
        return sorted(str(p.relative_to(folder)) for p in folder.glob(pattern) if p.is_file())
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if fnmatch(e.name, pattern) and e.is_file())


def _evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)] if k > 1 else items[:1]


def _sample(report: Report, split: str, need: Need, paths: list, k: int) -> str:
    """Parses up to k of `paths` with the need's sampler; a failure is MISSING (unreadable)."""
    if need.sample is None or k <= 0:
        return ""
    seen = []
    for path in _evenly(paths, k):
        try:
            seen.append(need.sample(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure is reported, not raised
            report.add(split, MISSING, str(Path(path).relative_to(report.root)), f"unreadable: {exc}")
    kinds = Counter(seen)
    said = ", ".join(k if n == 1 else f"{k} (x{n})" for k, n in kinds.items())
    return f"; sampled {len(seen)}: {said}" if seen else ""


def _published(layout: Layout, split: str, key: str, found: int) -> str:
    expected = layout.published.get(split, {}).get(key)
    if expected is None:
        return ""
    return f" (published: {expected:,})" if found == expected else f" (published: {expected:,}; differs)"


def _check_need(report: Report, split: str, need: Need, values: dict, k: int) -> bool:
    """Adds the findings of one need; False when a required one is missing."""
    rel = need.path.format(**values)
    path = report.root / rel
    if rel.endswith("/"):  # a folder whose files the annotations name (the index checks them)
        if path.is_dir():
            report.add(split, OK, rel, need.what)
            return True
        report.add(split, MISSING if need.required else WARN, rel, f"no folder; the reader expects {need.what} here")
        return not need.required
    if not need.files:  # one file, or the first present of alternatives "a|b"
        for alternative in rel.split("|"):
            if (report.root / alternative).is_file():
                found = report.root / alternative
                report.add(split, OK, alternative, need.what + _sample(report, split, need, [found], 1))
                return True
        what = f"no file{' (any of them)' if '|' in rel else ''}; the reader expects {need.what} here"
        report.add(split, MISSING if need.required else WARN, rel, what)
        return not need.required
    if not path.is_dir():
        level = MISSING if need.required else WARN
        report.add(split, level, rel, f"no folder; the reader expects {need.what} ({need.files}) here")
        return not need.required
    names = _listing(path, need.files)
    if not names:
        level = MISSING if need.required else WARN
        report.add(split, level, rel, f"no {need.files} files; the reader expects {need.what} here")
        return not need.required
    sampled = _sample(report, split, need, [path / n for n in names], k)
    published = _published(report.layout, split, need.path, len(names))
    report.add(split, OK, rel, f"{len(names):,} {need.files}{published}: {need.what}{sampled}")
    return True


def _check_files(report: Report, split: str, files) -> None:
    """Every file the annotations name exists: one listing per folder, not one stat per file."""
    by_folder: dict = {}
    for f in files:
        f = Path(f)
        by_folder.setdefault(f.parent, set()).add(f.name)
    for folder, names in sorted(by_folder.items()):
        rel = str(folder.relative_to(report.root)) if folder.is_relative_to(report.root) else str(folder)
        present = set(os.listdir(folder)) if folder.is_dir() else set()
        absent = sorted(names - present)
        if absent:
            report.add(
                split,
                MISSING,
                rel,
                f"{len(absent):,} of the {len(names):,} files the annotations name are missing, e.g. {absent[0]}",
            )
        else:
            report.add(split, OK, rel, f"all {len(names):,} files the annotations name are there")


def check(name: str, root, splits=None, options: dict | None = None, samples: int = 3) -> Report:
    """The findings of layout `name` under `root` for `splits` (all of the layout's by default);
    `options` fill the layout's path placeholders (its defaults otherwise)."""
    layout = get(name)
    unknown = set(options or {}) - set(layout.options)
    if unknown:
        known = ", ".join(sorted(layout.options)) or "none"
        raise KeyError(f"{name} takes no option {sorted(unknown)[0]!r}; its options: {known}")
    values = {**layout.options, **(options or {})}
    chosen = list(layout.splits) if not splits else list(splits)
    for s in chosen:
        if s not in layout.splits:
            raise KeyError(f"--split: {name} has no split {s!r}; its splits: {', '.join(layout.splits)}")
    report = Report(layout, Path(root))
    if not report.root.is_dir():
        report.add("", MISSING, "", "the root is not a folder")
        return report
    shared = [n for n in layout.needs if "{split}" not in n.path]
    ready = all([_check_need(report, "", n, values, samples) for n in shared])
    for s in chosen:
        per_split = {**values, "split": layout.splits[s]}
        here = all([_check_need(report, s, n, per_split, samples) for n in layout.needs if n not in shared])
        if layout.index is None or not (ready and here):
            continue
        try:
            index = layout.index(report.root, s, per_split)
        except Exception as exc:  # noqa: BLE001 - the reader's own complaint, reported
            report.add(s, MISSING, "", f"the reader cannot read this split: {exc}")
            continue
        for what, n in index.counts.items():
            level = OK if n else WARN
            report.add(s, level, "", f"{n:,} {what}{_published(layout, s, what, n)}")
        _check_files(report, s, index.files)
    return report


def listing() -> str:
    """The known layouts, one a line, and the registered datasets that read no files."""
    width = max(map(len, [*layouts(), *NO_FILES])) + 2
    lines = [f"{name:<{width}}{layout.title}" for name, layout in sorted(layouts().items())]
    lines += [f"{name:<{width}}(no files: {why})" for name, why in sorted(NO_FILES.items())]
    return "\n".join(lines)


def _readers_text(layout: Layout) -> str:
    """Which datasets read the layout, with their data.options."""
    out = []
    for name, options in layout.readers.items():
        items = {**options, "root": "<root>"}
        out.append(f"`{name}` ({', '.join(f'`{k}: {str(v).format(**layout.options)}`' for k, v in items.items())})")
    return "; ".join(out)


def _md(text: str) -> str:
    """Free text for markdown: <name> would read as an HTML tag."""
    return text.replace("<", "\\<")


def render_docs() -> str:
    """docs/data.md: every layout, from its declaration (`segfast data docs --out docs/data.md`)."""
    out = [
        "# Data: where to get it and the layout segfast expects",
        "",
        "Generated from the layouts the readers declare beside themselves (segfast/data/*.py,",
        "`declare(Layout(...))`) by `segfast data docs --out docs/data.md`; a test keeps it current.",
        "Check a folder before training with `segfast data check --dataset NAME --root DIR`",
        "(`--split` to check one split, `key=value` for a layout's path options): it lists what it",
        "found, compares counts with the published ones, parses a few files and names every missing",
        "piece with what the reader expected there. Paths below are relative to the root; `{split}`",
        "stands for the split's folder or file word.",
        "",
    ]
    for name, layout in sorted(layouts().items()):
        out += [f"## {name}: {layout.title}", "", f"Download: {_md(layout.download)}", ""]
        out += [f"Read by (data.name and data.options): {_readers_text(layout)}."]
        if len(layout.splits) > 1 or "" not in layout.splits:
            words = ", ".join(f"{s} (`{w}`)" if s != w else s for s, w in layout.splits.items())
            out += ["", f"Splits: {words}."]
        if layout.options:
            defaults = ", ".join(f"`{k}={v}`" for k, v in layout.options.items())
            out += ["", f"Path options (`segfast data check ... key=value`), defaults: {defaults}."]
        out += ["", "| path | what the reader reads there | required |", "|---|---|---|"]
        for need in layout.needs:
            files = f" (`{need.files}`)" if need.files else ""
            out.append(f"| `{need.path}`{files} | {_md(need.what)} | {'yes' if need.required else 'no'} |")
        if layout.published:
            paths = {n.path for n in layout.needs}
            out += ["", f"Published counts ({_md(layout.source)}):", "", "| split | what | count |", "|---|---|---|"]
            for split, counts in layout.published.items():
                for what, n in counts.items():
                    what = f"files in `{what}`" if what in paths else what
                    out.append(f"| {split or 'all'} | {what} | {n:,} |")
        if layout.notes:
            out += ["", _md(layout.notes)]
        out.append("")
    out += ["## Datasets that read no files", ""]
    out += [f"- `{name}`: {why}" for name, why in sorted(NO_FILES.items())]
    return "\n".join(out) + "\n"
