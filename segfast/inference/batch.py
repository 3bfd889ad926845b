"""`segfast predict` over many inputs: what to ask about which image, batched, with a progress bar,
each result written by Prediction.save.

Inputs (one of):
  --image a.jpg --query "..."      one image; --query again for more questions about it (with
                                   --chat: the rounds of one conversation; --chat without --query
                                   reads rounds from standard input, one a line)
  --images DIR --query "..."       every image under DIR, the same question
  --pairs list.json                [{"image": path, "query": str}, ...]; an item may instead hold
                                   "rounds": [str, ...] (a conversation), and "classes": [...]
                                   (LaSagnA) or "support": [[image, mask], ...] (LLaFS); paths
                                   relative to the JSON file
--classes a,b,c and --support img.png:mask.png apply to every item without its own.

Written to --out per question: <stem>_mask{i}.png, <stem>.json, <stem>_overlay.png (stem: the
image's name, plus _q{k} for a second question, _r{k} for a conversation's rounds), and
predictions.jsonl with one line per question (image, query, text, labels, files).
"""

import json
import sys
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def support_pairs(specs) -> list | None:
    """ "img.png:mask.png" strings -> [(image path, mask path)]."""
    if not specs:
        return None
    out = []
    for spec in specs:
        image, sep, mask = str(spec).rpartition(":")
        if not sep or not image or not mask:
            raise ValueError(f"--support: expected IMAGE:MASK, got {spec!r}")
        out.append((image, mask))
    return out


def items_from(args) -> list:
    """[{"image", "queries", "chat", "classes", "support", "stem"}] from the command's arguments."""
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    support = support_pairs(args.support)
    given = [bool(args.image), bool(args.images), bool(args.pairs)]
    if sum(given) != 1:
        raise ValueError("give exactly one of --image, --images, --pairs")
    if args.pairs:
        listing = Path(args.pairs)
        entries = json.loads(listing.read_text())
        if not isinstance(entries, list):
            raise ValueError(f"--pairs: {listing} must hold a JSON list of {{image, query}} objects")
        items = []
        for i, e in enumerate(entries):
            if "image" not in e or ("query" not in e and "rounds" not in e):
                raise ValueError(f"--pairs: entry {i} needs image and query (or rounds)")
            rel = lambda p: str(p if Path(p).is_absolute() else listing.parent / p)  # noqa: E731
            items.append(
                {
                    "image": rel(e["image"]),
                    "queries": list(e["rounds"]) if "rounds" in e else [e["query"]],
                    "chat": "rounds" in e,
                    "classes": e.get("classes", classes),
                    "support": [(rel(a), rel(b)) for a, b in e["support"]] if "support" in e else support,
                }
            )
    else:
        queries = list(args.query or [])
        if not queries and not (args.chat and args.image):
            raise ValueError("--query is required (or --chat with --image to read rounds from standard input)")
        if args.images:
            root = Path(args.images)
            if not root.is_dir():
                raise FileNotFoundError(f"--images: {root} is not a directory")
            paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not paths:
                raise FileNotFoundError(f"--images: no {'/'.join(sorted(IMAGE_SUFFIXES))} files under {root}")
        else:
            paths = [Path(args.image)]
        items = [
            {"image": str(p), "queries": queries, "chat": bool(args.chat), "classes": classes, "support": support}
            for p in paths
        ]
    seen = {}
    for item in items:  # unique stems: a.jpg and a.png, or one image listed twice
        stem = Path(item["image"]).stem
        seen[stem] = seen.get(stem, 0) + 1
        item["stem"] = stem if seen[stem] == 1 else f"{stem}_{seen[stem] - 1}"
    return items


def _record(out: Path, stem: str, prediction, log) -> None:
    files = prediction.save(out, stem)
    entry = {
        "image": stem,
        "query": prediction.query,
        "text": prediction.text,
        "labels": prediction.labels,
        "masks": [p.name for p in files["masks"]],
        "overlay": files["overlay"].name,
    }
    log.write(json.dumps(entry) + "\n")


def stdin_rounds():
    while True:
        try:
            line = input("query (empty line ends)> " if sys.stdin.isatty() else "")
        except EOFError:
            return
        if not line.strip():
            return
        yield line


def run(predictor, items: list, out, batch_size: int = 4, progress: bool = True) -> int:
    """Predicts every item (questions without a conversation in batches of batch_size); returns
    the number of predictions written."""
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    singles = [(item, k, q) for item in items if not item["chat"] for k, q in enumerate(item["queries"])]
    chats = [item for item in items if item["chat"]]
    done = 0
    with (
        open(out / "predictions.jsonl", "a") as log,
        tqdm(total=len(singles) + sum(len(i["queries"]) for i in chats), unit="query", disable=not progress) as bar,
    ):
        for start in range(0, len(singles), batch_size):
            chunk = singles[start : start + batch_size]
            # one batch per class list (LaSagnA asks a batch the same classes) and shot count (LLaFS)
            groups = {}
            for entry in chunk:
                key = json.dumps([entry[0]["classes"], len(entry[0]["support"] or [])])
                groups.setdefault(key, []).append(entry)
            for group in groups.values():
                predictions = predictor.predict_batch(
                    [item["image"] for item, _, _ in group],
                    [q for _, _, q in group],
                    classes=group[0][0]["classes"],
                    supports=[item["support"] for item, _, _ in group],
                )
                for (item, k, _), prediction in zip(group, predictions):
                    _record(out, item["stem"] if k == 0 else f"{item['stem']}_q{k}", prediction, log)
                done += len(group)
                bar.update(len(group))
        for item in chats:
            conversation = predictor.chat()
            for r, query in enumerate(item["queries"] or stdin_rounds()):
                prediction = conversation.ask(item["image"], query)
                _record(out, f"{item['stem']}_r{r}", prediction, log)
                if not item["queries"]:
                    print(f"{prediction.text}  ({len(prediction.masks)} mask(s) -> {out}/{item['stem']}_r{r}_*)")
                done += 1
                bar.update(1)
    return done
