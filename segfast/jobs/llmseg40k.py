"""LLM-Seg40K's generation pipeline (LLM-Seg §4.2) as an offline, resumable job whose models are
local transformers checkpoints (no hosted API):

    segfast llmseg40k --out DIR \\
        --lvis lvis_v1_train.json --coco-images coco/train2017 \\
        --egoobjects egoobjects_train.json --egoobjects-images ego_objects/images \\
        --describer /weights/llava-v1.5-13b-hf --writer /weights/some-instruct-llm \\
        --sam-checkpoint /weights/sam_vit_h_4b8939.pth
    torchrun --nproc_per_node 8 -m segfast llmseg40k ...        # the images sharded by rank

Stages (--stages, all by default; each skips what an earlier run finished):
  sample     LVIS images with 2-5 categories ("simple") and with more than 5 ("complex"), 6000 and
             4000 drawn at random; EgoObjects images with more than 2 categories, 3000 drawn
             (§4.2.1; fewer when a source has fewer, with a warning). <out>/sample.json.
  describe   each image described by the local MLLM (`--describer`: any transformers
             image-text-to-text chat model, the paper's LLaVA-v1.5-13B) with "Please describe the
             content in this image within 10 sentences.", one single-turn conversation per image.
  ask        the local LLM (`--writer`: any transformers causal chat model; the paper used
             GPT-4) given Fig. 4's template with the description and the image's categories;
             its "[Q]: ... [A]: ..." lines parsed (segfast.text.llmseg40k: answers must be one of
             the categories, at most two questions each; the rest recorded as dropped).
  masks      each answered category's mask: LVIS's instance polygons unioned; EgoObjects' boxes
             through SAM (`--sam-checkpoint`, box prompt, one mask each) unioned.
  assemble   the images with questions split 11K / 1K / 2K (in proportion when there are fewer)
             into <out>/LLMSeg-40K/{train,validation,test}.json in the released format
             (segfast.data.referring reads it: {image: {from_dataset, qa_pairs: [{question,
             answer, rle_seg}]}}; LVIS images are from_dataset "coco").

Inputs: LVIS v1 annotations (lvisdataset.org; images are COCO 2017's, found by the file name of
their coco_url under --coco-images); EgoObjects annotations as a COCO-style file (images with
file_name, height, width; annotations with image_id, category_id and an [x, y, w, h] bbox;
categories with id and name), images under --egoobjects-images. Each stage appends to
<out>/<stage>/part-<rank>.jsonl and flushes per image, so an interrupted run resumes where it
stopped; answers are greedy (reproducible) unless --sample is given.
"""

import json
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from segfast.data.coco_masks import segmentation_mask
from segfast.data.cot_cache import CacheWriter, read_cache
from segfast.frames import read_rgb
from segfast.io import save_json
from segfast.registry import Job, register_job
from segfast.text.llmseg40k import DESCRIBE, parse_questions, question_prompt
from segfast.train.distributed import barrier, init_distributed, shutdown

STAGES = ("sample", "describe", "ask", "masks", "assemble")
COUNTS = {"simple": 6000, "complex": 4000, "egoobjects": 3000}  # §4.2.1
SPLITS = {"train": 11000, "validation": 1000, "test": 2000}  # §4.3


# ---- the local models ----------------------------------------------------------------------------
class Describer:
    """Any local transformers image-text-to-text chat model (AutoProcessor + its chat template)."""

    def __init__(self, path: str, device, max_new_tokens: int = 512, sample: bool = False):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(path)
        self.model = AutoModelForImageTextToText.from_pretrained(path).to(device).eval()
        self.device, self.max_new_tokens, self.sample = device, max_new_tokens, sample

    @torch.no_grad()
    def __call__(self, image: np.ndarray, prompt: str = DESCRIBE) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=image, text=text, return_tensors="pt").to(self.device)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=self.sample)
        return self.processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


class Writer:
    """Any local transformers causal chat model (AutoTokenizer's chat template)."""

    def __init__(self, path: str, device, max_new_tokens: int = 1024, sample: bool = False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
        self.device, self.max_new_tokens, self.sample = device, max_new_tokens, sample

    @torch.no_grad()
    def __call__(self, prompt: str) -> str:
        ids = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=self.sample)
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()


class BoxSegmenter:
    """SAM with box prompts (segment-anything's SamPredictor, one mask per box)."""

    def __init__(self, model_type: str, checkpoint: str | None, device):
        from segment_anything import SamPredictor

        from segfast.models.sam.build import load_sam

        self.predictor = SamPredictor(load_sam(model_type, checkpoint, device))

    def __call__(self, image: np.ndarray, boxes: list) -> np.ndarray:
        """(n, H, W) bool masks of xyxy boxes."""
        self.predictor.set_image(image)
        masks = [self.predictor.predict(box=np.asarray(b, float), multimask_output=False)[0][0] for b in boxes]
        return np.stack(masks).astype(bool)


# ---- sampling ------------------------------------------------------------------------------------
def _draw(rng: random.Random, pool: list, count: int, what: str) -> list:
    if len(pool) < count:
        warnings.warn(f"llmseg40k: only {len(pool)} {what} images, fewer than {count}; taking them all", stacklevel=3)
        count = len(pool)
    return rng.sample(pool, count)


def sample_lvis(path, images_dir, rng: random.Random, counts: dict) -> list:
    data = json.loads(Path(path).read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image = {}
    for a in data["annotations"]:
        per_image.setdefault(a["image_id"], {}).setdefault(names[a["category_id"]], []).append(a["id"])
    info = {i["id"]: i for i in data["images"]}
    simple = sorted(i for i, c in per_image.items() if 2 <= len(c) < 6)
    complex_ = sorted(i for i, c in per_image.items() if len(c) > 5)
    chosen = [(i, "simple") for i in _draw(rng, simple, counts["simple"], "simple LVIS")]
    chosen += [(i, "complex") for i in _draw(rng, complex_, counts["complex"], "complex LVIS")]
    out = []
    for i, kind in chosen:
        name = info[i].get("file_name") or Path(info[i]["coco_url"]).name
        out.append(
            {
                "key": f"coco/{Path(name).name}",
                "image": Path(name).name,
                "from_dataset": "coco",
                "path": str(Path(images_dir) / Path(name).name),
                "height": info[i]["height"],
                "width": info[i]["width"],
                "kind": kind,
                "categories": sorted(per_image[i]),
                "annotations": per_image[i],  # category -> LVIS annotation ids
            }
        )
    return out


def sample_egoobjects(path, images_dir, rng: random.Random, count: int) -> list:
    data = json.loads(Path(path).read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    per_image = {}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        per_image.setdefault(a["image_id"], {}).setdefault(names[a["category_id"]], []).append([x, y, x + w, y + h])
    info = {i["id"]: i for i in data["images"]}
    pool = sorted(i for i, c in per_image.items() if len(c) > 2)
    out = []
    for i in _draw(rng, pool, count, "EgoObjects"):
        name = Path(info[i].get("file_name") or info[i]["url"]).name
        out.append(
            {
                "key": f"ego_objects/{name}",
                "image": name,
                "from_dataset": "ego_objects",
                "path": str(Path(images_dir) / name),
                "height": info[i]["height"],
                "width": info[i]["width"],
                "kind": "egoobjects",
                "categories": sorted(per_image[i]),
                "boxes": per_image[i],  # category -> xyxy boxes
            }
        )
    return out


# ---- the pipeline --------------------------------------------------------------------------------
def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def _stage(out: Path, name: str, sample: list, rank: int, world: int, work, desc: str) -> int:
    """Runs work(item) -> record (or None: nothing to record) for this rank's items of `sample`
    without a record in <out>/<name>/ yet; returns how many it did."""
    done = read_cache(out / name, warn=False)
    todo = [s for s in sample[rank::world] if s["key"] not in done]
    if not todo:
        return 0
    writer = CacheWriter(out / name, rank)
    count = 0
    for item in tqdm(todo, desc=f"llmseg40k {desc} rank {rank}", unit="img", disable=rank != 0):
        record = work(item)
        if record is not None:
            writer.append([{"key": item["key"], **record}])
            count += 1
    return count


def _lvis_annotations(path, sample: list) -> dict:
    """id -> LVIS annotation, for the annotations `sample` refers to."""
    if not path:
        raise ValueError("--lvis: the LVIS annotations are needed again for the masks stage")
    wanted = {a for s in sample for ids in s.get("annotations", {}).values() for a in ids}
    return {a["id"]: a for a in json.loads(Path(path).read_text())["annotations"] if a["id"] in wanted}


def generate(
    out,
    *,
    lvis: str = "",
    coco_images: str = "",
    egoobjects: str = "",
    egoobjects_images: str = "",
    describer=None,
    writer=None,
    segmenter=None,
    stages=STAGES,
    seed: int = 0,
    counts: dict | None = None,
    splits: dict | None = None,
    device: str = "auto",
) -> dict:
    """Runs the stages (see the module doc). describer(image) -> str, writer(prompt) -> str and
    segmenter(image, xyxy boxes) -> (n, H, W) masks are the three models (Describer, Writer,
    BoxSegmenter, or any callables); each is needed only by its stage. Returns counts."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"stages: unknown {unknown}; known: {', '.join(STAGES)}")
    out = Path(out)
    env = init_distributed(device)
    try:
        report = {}
        sample_path = out / "sample.json"
        if "sample" in stages and not sample_path.exists():
            if not lvis and not egoobjects:
                raise ValueError("--lvis or --egoobjects: at least one source is needed to sample images")
            rng, n = random.Random(seed), {**COUNTS, **(counts or {})}
            images = sample_lvis(lvis, coco_images, rng, n) if lvis else []
            images += sample_egoobjects(egoobjects, egoobjects_images, rng, n["egoobjects"]) if egoobjects else []
            if env.is_main:
                save_json({"seed": seed, "images": images}, sample_path)
            report["sampled"] = len(images)
        barrier(env)
        if not sample_path.exists():
            raise FileNotFoundError(f"out: no {sample_path}; run the sample stage first")
        sample = json.loads(sample_path.read_text())["images"]
        rank, world = env.rank, env.world_size
        if "describe" in stages:
            if describer is None:
                raise ValueError("--describer: the describe stage needs a local image-text model")
            report["described"] = _stage(
                out,
                "descriptions",
                sample,
                rank,
                world,
                lambda s: {"description": describer(read_rgb(s["path"]))},
                "describe",
            )
        barrier(env)
        if "ask" in stages:
            if writer is None:
                raise ValueError("--writer: the ask stage needs a local language model")
            descriptions = read_cache(out / "descriptions", warn=False)

            def ask(s):
                if s["key"] not in descriptions:
                    return None  # described later; asked by a rerun
                raw = writer(question_prompt(descriptions[s["key"]]["description"], s["categories"]))
                kept, dropped = parse_questions(raw, s["categories"])
                return {"qa": kept, "dropped": [list(d) for d in dropped], "raw": raw}

            report["asked"] = _stage(out, "questions", sample, rank, world, ask, "ask")
        barrier(env)
        if "masks" in stages:
            questions = read_cache(out / "questions", warn=False)
            need = [s for s in sample if questions.get(s["key"], {}).get("qa")]
            lvis_anns = _lvis_annotations(lvis, need) if any(s["from_dataset"] == "coco" for s in need) else {}

            def masks(s):
                answered = sorted({qa["answer"] for qa in questions[s["key"]]["qa"]})
                if s["from_dataset"] == "coco":
                    polygons = {c: [lvis_anns[a]["segmentation"] for a in s["annotations"][c]] for c in answered}
                    union = {
                        c: np.any([segmentation_mask(p, s["height"], s["width"]).numpy() for p in parts], 0)
                        for c, parts in polygons.items()
                    }
                else:
                    if segmenter is None:
                        raise ValueError("--sam-checkpoint: EgoObjects boxes become masks through SAM")
                    image = read_rgb(s["path"])
                    union = {c: segmenter(image, s["boxes"][c]).any(0) for c in answered}
                return {"masks": {c: _rle(m) for c, m in union.items()}}

            report["masked"] = _stage(out, "masks", need, rank, world, masks, "masks")
        barrier(env)
        if "assemble" in stages and env.is_main:
            report.update(assemble(out, sample, seed, splits))
        return report
    finally:
        shutdown(env)


def split_sizes(n: int, splits: dict) -> dict:
    """The split sizes for n images: the given counts, scaled in proportion when n differs."""
    total = sum(splits.values())
    names = list(splits)
    sizes = {k: int(round(n * splits[k] / total)) for k in names[1:]}
    sizes[names[0]] = n - sum(sizes.values())
    return {k: sizes[k] for k in names}


def assemble(out: Path, sample: list, seed: int = 0, splits: dict | None = None) -> dict:
    """<out>/LLMSeg-40K/{train,validation,test}.json from the questions and masks on disk."""
    questions, masks = read_cache(out / "questions", warn=False), read_cache(out / "masks", warn=False)
    ready = [s for s in sample if questions.get(s["key"], {}).get("qa") and s["key"] in masks]
    waiting = sum(1 for s in sample if questions.get(s["key"], {}).get("qa") and s["key"] not in masks)
    if waiting:
        warnings.warn(
            f"llmseg40k: {waiting} images with questions have no masks yet; run the masks stage", stacklevel=2
        )
    random.Random(seed).shuffle(ready)
    sizes = split_sizes(len(ready), {**SPLITS, **(splits or {})})
    report, start = {}, 0
    for name, size in sizes.items():
        part = ready[start : start + size]
        start += size
        data = {
            s["image"]: {
                "from_dataset": s["from_dataset"],
                "qa_pairs": [
                    {
                        "question": qa["question"],
                        "answer": qa["answer"],
                        "rle_seg": masks[s["key"]]["masks"][qa["answer"]],
                    }
                    for qa in questions[s["key"]]["qa"]
                ],
            }
            for s in part
        }
        save_json(data, out / "LLMSeg-40K" / f"{name}.json")
        n_q = sum(len(v["qa_pairs"]) for v in data.values())
        words = [len(qa["question"].split()) for v in data.values() for qa in v["qa_pairs"]]
        report[name] = {
            "images": len(data),
            "questions": n_q,
            "questions_per_image": n_q / len(data) if data else 0.0,
            "words_per_question": float(np.mean(words)) if words else 0.0,
        }
    return report


# ---- the command line ----------------------------------------------------------------------------
def arguments(p) -> None:
    p.add_argument("--out", required=True, help="the working folder; LLMSeg-40K/ is written inside it")
    p.add_argument("--lvis", default="", help="LVIS v1 annotations (lvis_v1_train.json)")
    p.add_argument("--coco-images", default="", help="the COCO 2017 images LVIS annotates (train2017)")
    p.add_argument("--egoobjects", default="", help="EgoObjects annotations (COCO-style json)")
    p.add_argument("--egoobjects-images", default="", help="the EgoObjects image folder")
    p.add_argument("--describer", default="", help="a local transformers image-text chat model (LLaVA-v1.5-13B)")
    p.add_argument("--writer", default="", help="a local transformers causal chat model (the question writer)")
    p.add_argument("--sam-checkpoint", default=None, help="SAM checkpoint for EgoObjects' boxes")
    p.add_argument("--sam-type", default="vit_h", help="vit_h, vit_l, vit_b or tiny")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {','.join(STAGES)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--simple", type=int, default=COUNTS["simple"], help="LVIS images with 2-5 categories")
    p.add_argument("--complex", type=int, default=COUNTS["complex"], help="LVIS images with more than 5 categories")
    p.add_argument("--egoobjects-count", type=int, default=COUNTS["egoobjects"])
    p.add_argument("--splits", default="11000,1000,2000", help="train,validation,test image counts (proportions)")
    p.add_argument("--describe-tokens", type=int, default=512, help="max new tokens of a description")
    p.add_argument("--ask-tokens", type=int, default=1024, help="max new tokens of the question writer's answer")
    p.add_argument("--sample", action="store_true", help="sample the models' answers instead of greedy decoding")
    p.add_argument("--device", default="auto", choices=["auto", "cpu"])


def run(args) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    device = init_distributed(args.device).device  # generate() joins the same group
    describer = Describer(args.describer, device, args.describe_tokens, args.sample) if args.describer else None
    writer = Writer(args.writer, device, args.ask_tokens, args.sample) if args.writer else None
    needs_sam = "masks" in stages and args.egoobjects
    segmenter = BoxSegmenter(args.sam_type, args.sam_checkpoint, device) if needs_sam else None
    counts = {"simple": args.simple, "complex": args.complex, "egoobjects": args.egoobjects_count}
    train, val, test = (int(x) for x in args.splits.split(","))
    report = generate(
        args.out,
        lvis=args.lvis,
        coco_images=args.coco_images,
        egoobjects=args.egoobjects,
        egoobjects_images=args.egoobjects_images,
        describer=describer,
        writer=writer,
        segmenter=segmenter,
        stages=stages,
        seed=args.seed,
        counts=counts,
        splits={"train": train, "validation": val, "test": test},
        device=args.device,
    )
    print(json.dumps(report, indent=2))
    return 0


register_job(
    Job(
        "llmseg40k",
        arguments,
        run,
        "LLM-Seg40K's generation pipeline with local models (sample, describe, ask, masks, assemble; resumable)",
    )
)
