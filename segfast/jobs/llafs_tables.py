"""Region-attribute tables for LLaFS's fine-grained in-context instruction (§3.2.2, Supp A.1,
Supp B: "we pre-generate the table for each image before training"), as an offline job.

For every (image, class) pair of a fold's split:
  1. the class's attributes from an LLM asked ATTRIBUTES ("What does a [class] look like? ...",
     Fig. 3a), once per class, or from a JSON {class: [phrases]};
  2. superpixels of each object of the class at several scales (scikit-image's Felzenszwalb
     segmentation, the graph segmentation selective search starts from, at `scales`), cut to the
     object;
  3. each region's masked crop through CLIP's image encoder (f_i) against "A photo of [att]"
     through its text encoder (t_j): region i has attribute j when cos(f_i, t_j) > alpha (Eq. 1,
     alpha = 0.2); regions with no attribute are left out of the table;
  4. the expert-guide refinement (Fig. 3b-c, Supp A.1): ask which other classes have the
     matched attributes (AMBIGUITY); if any, ask for discriminative attributes (DISCRIMINATIVE,
     then MORE from the second iteration on), add them and match again, until a new attribute
     matches a region or `iterations` (3) are done.

The models are pluggable: `ask(prompt) -> answer` is any local instruction-tuned LLM through
transformers (local_llm) or anything callable; `matcher` has image_features(crops) and
text_features(texts) (clip_matcher: open_clip with a local checkpoint, e.g. OVSeg's
mask-adapted CLIP ViT-L/14 that the paper uses, [28]).

Output: JSON lines, one per pair, appended and flushed as they are made, so an interrupted run
resumes where it stopped (pairs already in the file are skipped):
    {"key": "<image>__<class>", "size": [H, W], "attributes": [...], "regions":
     [{"polygon": [[x, y] x V] (pixels of the original image), "attributes": [...]}, ...],
     "ambiguous": [classes], "iterations": n}
segfast.data.fewshot reads them (data.options.tables). The regions are V-point polygons, V =
num_vertices (--num-vertices; the paper's 16, §3.2.2), which must be model.options.num_vertices.
"""

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from segfast.data.fewshot import FewShotEpisodes, connected_components
from segfast.ops import mask_to_polar_polygons
from segfast.registry import Job, register_job

ATTRIBUTES = (
    "What does a {name} look like? Please answer in the format of: A {name} has A, B, C, ..., where A, B, "
    "and C are noun phrases to describe a {name}."
)
AMBIGUITY = (
    "Except for {name}, which classes also have {partial}? Please answer in the format of: the following "
    "classes also have them: A, B, C, ..., where A, B and C are the name of classes. If there is no such a "
    "class, reply 'no'."
)
DISCRIMINATIVE = (
    "What does {name} look different from {classes}? Please answer in the format of: {name} has A, B, C,..., "
    "where A,B and C are noun phrases to describe the difference of {name} compared to {classes}."
)
MORE = (
    "Apart from {found}, tell me more differences in appearance between {name} and {classes}. Please answer in "
    "the format of: {name} has A, B, C,..., where A,B and C are noun phrases to describe more differences of "
    "{name} compared to {classes} apart from the given ones."
)
PHOTO = "A photo of {}"
ALPHA = 0.2  # LLaFS §4.1, Eq. (1)


def _items(text: str) -> list[str]:
    parts = re.split(r",|\band\b", text)
    return [p.strip(" .;:'\"\n") for p in parts if p.strip(" .;:'\"\n")]


def parse_has(answer: str) -> list[str]:
    """ "A horse has a sleek coat, a long tail, ... ." -> the phrases after "has"."""
    match = re.search(r"\bhas\b(.*)", answer, re.S | re.I)
    return _items(match.group(1)) if match else []


def parse_classes(answer: str) -> list[str]:
    """ "The following classes also have them: Cheetah, Panther." -> classes; "no" -> []."""
    if re.fullmatch(r"\W*no\W*", answer.strip(), re.I):
        return []
    return _items(answer.split(":", 1)[1]) if ":" in answer else []


def _tuple(items) -> str:
    return "(" + ", ".join(items) + ")"


def superpixels(image: np.ndarray, mask: np.ndarray, scales=(100, 300, 1000), min_share: float = 0.02) -> list:
    """(H, W, 3) uint8 image, (H, W) bool object mask -> bool region masks inside the object at
    each scale (Felzenszwalb), each at least min_share of the object (and 16 pixels)."""
    from skimage.segmentation import felzenszwalb

    area = int(mask.sum())
    regions = []
    for scale in scales:
        labels = felzenszwalb(image, scale=scale, sigma=0.8, min_size=20)
        for value in np.unique(labels[mask]):
            region = (labels == value) & mask
            if region.sum() >= max(16, min_share * area):
                regions.append(region)
    return regions


def masked_crop(image: np.ndarray, region: np.ndarray) -> torch.Tensor:
    """The region's box with everything outside the region zeroed, (3, h, w) float in [0, 1]."""
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y0:y1, x0:x1] * region[y0:y1, x0:x1, None]
    return torch.from_numpy(crop).permute(2, 0, 1).float() / 255


class Table:
    """Matches regions to attributes (Eq. 1) and runs the expert-guide refinement for one pair."""

    def __init__(self, ask, matcher, alpha: float = ALPHA, iterations: int = 3):
        self.ask, self.matcher, self.alpha, self.iterations = ask, matcher, alpha, iterations

    def match(self, region_features: torch.Tensor, attributes: list[str]) -> list[list[str]]:
        """[cor]_i for each region: the attributes whose "A photo of [att]" embedding has cosine
        similarity above alpha with the region's feature."""
        if not attributes or len(region_features) == 0:
            return [[] for _ in range(len(region_features))]
        text = F.normalize(self.matcher.text_features([PHOTO.format(a) for a in attributes]).float(), dim=-1)
        sim = F.normalize(region_features.float(), dim=-1) @ text.T
        return [[a for a, s in zip(attributes, row.tolist()) if s > self.alpha] for row in sim]

    def build(self, name: str, attributes: list[str], region_features: torch.Tensor) -> dict:
        cor = self.match(region_features, attributes)
        ambiguous, found, iterations = [], [], 0
        partial = list(dict.fromkeys(a for c in cor for a in c))
        if self.ask is not None and partial and self.iterations:
            ambiguous = parse_classes(self.ask(AMBIGUITY.format(name=name, partial=_tuple(partial))))
            while ambiguous and iterations < self.iterations:
                iterations += 1
                classes = _tuple(ambiguous)
                prompt = MORE if found else DISCRIMINATIVE
                answer = self.ask(prompt.format(name=name, classes=classes, found=_tuple(found)))
                new = [a for a in parse_has(answer) if a not in attributes]
                found += new
                attributes = attributes + new
                new_cor = self.match(region_features, new)
                cor = [c + n for c, n in zip(cor, new_cor)]
                if any(new_cor):  # a discriminative attribute found its region: no longer ambiguous
                    break
        return {"attributes": attributes, "cor": cor, "ambiguous": ambiguous, "iterations": iterations}


def _objects(source, key, cls):
    mask, _, objects = source.masks(key, cls)
    return mask, objects if objects is not None else connected_components(mask)


def make_tables(
    data: FewShotEpisodes,
    out,
    matcher,
    ask=None,
    attributes: dict | None = None,
    alpha: float = ALPHA,
    iterations: int = 3,
    scales=(100, 300, 1000),
    limit: int = 0,
    num_vertices: int = 16,
) -> int:
    """Appends the tables of `data`'s pairs not yet in `out`; returns how many it made."""
    out = Path(out)
    done = set()
    if out.exists():
        done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()}
    if attributes is None and ask is None:
        raise ValueError("class attributes need an LLM (--llm) or a JSON of them (--attributes)")
    known = dict(attributes or {})
    table = Table(ask, matcher, alpha, iterations)
    made = 0
    with out.open("a") as sink:
        for key, cls in data.source.pairs:
            if f"{key}__{cls}" in done or (limit and made >= limit):
                continue
            name = data.source.names[cls]
            if name not in known:
                known[name] = parse_has(ask(ATTRIBUTES.format(name=name)))
            image = data.source.image(key).permute(1, 2, 0).numpy()
            mask, objects = _objects(data.source, key, cls)
            regions = [r for o in objects for r in superpixels(image, o.numpy(), scales)]
            feats = matcher.image_features([masked_crop(image, r) for r in regions]) if regions else torch.zeros(0, 1)
            result = table.build(name, known[name], feats)
            polygons = mask_to_polar_polygons(torch.from_numpy(np.stack(regions)), num_vertices) if regions else []
            row = {
                "key": f"{key}__{cls}",
                "size": list(mask.shape),
                "attributes": result["attributes"],
                "regions": [{"polygon": p.tolist(), "attributes": c} for p, c in zip(polygons, result["cor"]) if c],
                "ambiguous": result["ambiguous"],
                "iterations": result["iterations"],
            }
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            made += 1
    return made


class clip_matcher:
    """CLIP through open_clip from a local checkpoint: image_features of masked crops (resized to
    the model's input, CLIP's normalisation) and text_features of phrases."""

    def __init__(self, model: str = "ViT-L-14", weights: str = "", device: str = "cpu"):
        import open_clip

        from segfast.frames import CLIP_MEAN, CLIP_STD

        self.model = open_clip.create_model(model, pretrained=weights or None).to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.size = self.model.visual.image_size
        self.size = self.size[0] if isinstance(self.size, (tuple, list)) else self.size
        self.mean = torch.tensor(CLIP_MEAN)[:, None, None]
        self.std = torch.tensor(CLIP_STD)[:, None, None]
        self.device = device

    @torch.no_grad()
    def image_features(self, crops) -> torch.Tensor:
        batch = torch.stack(
            [F.interpolate(c[None], size=(self.size,) * 2, mode="bilinear", align_corners=False)[0] for c in crops]
        )
        return self.model.encode_image(((batch - self.mean) / self.std).to(self.device)).cpu()

    @torch.no_grad()
    def text_features(self, texts) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device)).cpu()


def local_llm(path: str, max_new_tokens: int = 96):
    """ask(prompt) -> answer with a local instruction-tuned causal LM (transformers format),
    greedy, through its chat template when it has one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()

    @torch.no_grad()
    def ask(prompt: str) -> str:
        if tokenizer.chat_template:
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
            )
        else:
            ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    return ask


def arguments(p) -> None:
    p.add_argument("--root", required=True, help="PASCAL-5i or COCO-20i root (see segfast.data.fewshot)")
    p.add_argument("--dataset", default="pascal", choices=["pascal", "coco"])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--split", default="both", choices=["train", "val", "both"])
    p.add_argument("--out", required=True, help="the JSON-lines file (appended to; reruns resume)")
    p.add_argument("--llm", help="a local instruction-tuned LLM directory (attributes and refinement)")
    p.add_argument("--attributes", help="JSON {class: [phrases]} instead of asking the LLM for them")
    p.add_argument("--clip-model", default="ViT-L-14", help="open_clip architecture")
    p.add_argument("--clip-weights", required=True, help="a local CLIP checkpoint (OVSeg's mask-adapted CLIP)")
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--iterations", type=int, default=3, help="expert-guide refinement iterations (0: none)")
    p.add_argument("--limit", type=int, default=0, help="make at most this many tables this run")
    p.add_argument("--num-vertices", type=int, default=16, help="the regions' polygon vertices (LLaFS Fig. 5)")


def run(args) -> int:
    ask = local_llm(args.llm) if args.llm else None
    attributes = json.loads(Path(args.attributes).read_text()) if args.attributes else None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    matcher = clip_matcher(args.clip_model, args.clip_weights, device)
    splits = ["train", "val"] if args.split == "both" else [args.split]
    for split in splits:
        data = FewShotEpisodes(args.root, args.dataset, args.fold, 1, split, augment=False)
        made = make_tables(
            data,
            args.out,
            matcher,
            ask,
            attributes,
            args.alpha,
            args.iterations,
            limit=args.limit,
            num_vertices=args.num_vertices,
        )
        print(f"{args.dataset} fold {args.fold} {split}: {made} new tables in {args.out}")
    return 0


register_job(Job("llafs-tables", arguments, run, "region-attribute tables of LLaFS's fine-grained instruction"))
