"""How each system turns images and queries into masks at the images' sizes and answers.

A runner per system: predict(images, queries, classes=, supports=) -> per pair (masks (N, H, W)
bool, text, labels or None). Its settings (defaults below, each with where it comes from) come
from the checkpoint's inference.json and from segfast.load's keyword arguments.

  lisa, lasagna, segllm, llavaseg  the query is wrapped in `question` (the image token first, as
                     LISA's chat.py puts it before the user's text); masks are the [SEG] masks
                     upsampled from SAM's frame to the image as segment-anything does.
  lasagna            with classes: LaSagnA's chunked questions; one mask per present class
                     (each pixel to the class of the highest logit), labelled.
  segllm             chat rounds keep the rounds and the mask memory (chat_round).
  llavaseg           `kind`: "reasoning" (a sentence) or "short" (a name) for the chain of thought.
  llm-seg            everything-mode proposals from a SAM (`sam_type`, `sam_checkpoint`,
                     `max_proposals` largest); the selected proposals' union at full resolution.
  llafs              support (image, mask) pairs; the query names the class (may be empty).
"""

import numpy as np
import torch
import torch.nn.functional as F

from segfast.frames import model_inputs, to_original
from segfast.text.tokens import IMAGE


def _resize_nearest(masks: torch.Tensor, size) -> torch.Tensor:
    """(n, h, w) bool -> (n, H, W) bool."""
    if len(masks) == 0:
        return torch.zeros(0, *size, dtype=torch.bool)
    return F.interpolate(masks[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0.5


class Runner:
    SETTINGS: dict = {}

    def __init__(self, model, settings: dict):
        unknown = sorted(set(settings) - set(self.SETTINGS))
        if unknown:
            known = ", ".join(self.SETTINGS) or "none"
            raise ValueError(f"unknown inference setting(s) {', '.join(unknown)} for this system (known: {known})")
        self.model, self.settings = model, {**self.SETTINGS, **settings}
        self.device = next(model.parameters()).device
        # the language model (LLaVASeg keeps its frozen MLLM in the chain of thought)
        self.lm = getattr(model, "lm", None) or getattr(getattr(model, "chain", None), "lm", None)

    def check(self, classes, supports) -> None:
        if classes is not None:
            raise ValueError("classes: only LaSagnA takes a class list")
        if supports is not None and any(s is not None for s in supports):
            raise ValueError("support: only LLaFS takes support images with masks")


class SegTokenRunner(Runner):
    """LISA and its [SEG]-token successors."""

    # question: LISA's chat.py puts the image token before the user's text; generate: keyword
    # arguments of transformers' generate (max_new_tokens, num_beams, sequence_bias, ...)
    SETTINGS = {"question": IMAGE + " {query}", "generate": {}}

    def frames(self, images: list) -> dict:
        from segfast.models.llava import image_size

        inputs = [model_inputs(i, self.model.decoder.image_size, image_size(self.lm)) for i in images]
        return {k: torch.stack([x[k] for x in inputs]).to(self.device) for k in inputs[0]}

    def question(self, query: str) -> str:
        return query if IMAGE in query else self.settings["question"].format(query=query)

    def predict(self, images, queries, *, classes=None, supports=None) -> list:
        self.check(classes, supports)
        batch = self.frames(images)
        batch["conversation"] = [[{"question": self.question(q), "answer": None}] for q in queries]
        results = self.model.generate(batch, return_logits=True, **self.settings["generate"])
        return [
            (to_original(r["logits"], batch["valid_size"][b], images[b].shape[:2]), r["text"], None)
            for b, r in enumerate(results)
        ]


class LaSagnARunner(SegTokenRunner):
    def predict(self, images, queries, *, classes=None, supports=None) -> list:
        if classes is None:
            return super().predict(images, queries, supports=supports)
        self.check(None, supports)
        classes = [str(c) for c in classes]
        if not classes:
            raise ValueError("classes: the class list is empty")
        batch = self.frames(images)
        answers = []
        # one label map per image at its unpadded frame's size (segment asks each its own list)
        labels = self.model.segment(batch, [classes] * len(images), answers=answers, **self.settings["generate"])
        out = []
        for b, label in enumerate(labels):
            present = [c for c in range(len(classes)) if bool((label == c).any())]
            masks = torch.stack([label == c for c in present]) if present else label.new_zeros(0, *label.shape).bool()
            masks = _resize_nearest(masks.cpu(), images[b].shape[:2])
            out.append((masks, " ".join(answers[b]), [classes[c] for c in present]))
        return out


class SegLLMRunner(SegTokenRunner):
    SETTINGS = {**SegTokenRunner.SETTINGS, "follow_up": "{query}"}

    def chat_round(self, state, image: np.ndarray, query: str):
        """One round of a conversation about `image`: ((masks, text, None), the new state)."""
        if state is None:
            state = self.model.start(self.frames([image]))
        first = not state["rounds"]
        asked = self.question(query) if first else self.settings["follow_up"].format(query=query.replace(IMAGE, ""))
        text, logits = self.model.respond(state, {"question": asked, "answer": None}, **self.settings["generate"])
        return (to_original(logits, state["one"]["valid_size"][0], image.shape[:2]), text, None), state


class LLaVASegRunner(SegTokenRunner):
    SETTINGS = {"kind": "reasoning"}  # LLaVASeg's reasoning queries; "short" for a class name

    def predict(self, images, queries, *, classes=None, supports=None) -> list:
        self.check(classes, supports)
        batch = self.frames(images)
        batch.update(query=list(queries), kind=[self.settings["kind"]] * len(queries), key=[""] * len(queries))
        return [
            (to_original(r["logits"][None], batch["valid_size"][b], images[b].shape[:2]), r["answer"], None)
            for b, r in enumerate(self.model.segment(batch))
        ]


class LLMSegRunner(Runner):
    # the paper's proposals come from SAM ViT-H in everything mode (sam_checkpoint: a local .pth);
    # "tiny" with no checkpoint is a random SAM for tests
    SETTINGS = {"sam_type": "tiny", "sam_checkpoint": "", "max_proposals": 32}

    def __init__(self, model, settings):
        super().__init__(model, settings)
        from segfast.models.sam.build import load_sam
        from segfast.models.sam.proposals import ProposalGenerator

        s = self.settings
        self.generator = ProposalGenerator(load_sam(s["sam_type"], s["sam_checkpoint"] or None, self.device))

    def predict(self, images, queries, *, classes=None, supports=None) -> list:
        from segfast.data.referring import pad_square
        from segfast.frames import clip_input, sam_frame
        from segfast.models.llava import image_size
        from segfast.ops import pack_masks
        from segfast.text.lisa import benchmark_round

        self.check(classes, supports)
        k = int(self.settings["max_proposals"])
        found = [p.top_k_by_area(k) for p in self.generator.generate_batch(images)]
        out = []
        for image, query, p in zip(images, queries, found):  # one image at a time: proposal sets differ
            h, w = image.shape[:2]
            if not len(p):
                out.append((torch.zeros(1, h, w, dtype=torch.bool), "", None))
                continue
            masks = p.masks().cpu()  # at the resolution SAM ran at (the image scaled to <= 1024)
            ph, pw = masks.shape[-2:]
            frame, valid = sam_frame(image, int(self.model.options.image_size))
            sample = {
                "image": frame,
                "valid_size": torch.tensor(valid),
                "clip_image": clip_input(image, image_size(self.lm)),
                "proposals": pad_square(pack_masks(masks), ph, pw),
                "proposal_size": torch.tensor([ph, pw]),
            }
            batch = {key: v[None].to(self.device) for key, v in sample.items()}
            # LLM-Seg asks as LISA's validation does, the answer "[SEG]." teacher-forced
            batch["conversations"] = [[[benchmark_round(query, True)]]]
            result = self.model.predict(batch)
            mask = self.model.masks(batch, result["chosen"], result["owner"])[0].cpu()
            out.append((_resize_nearest(mask[None], (h, w)), "", None))
        return out


class LLaFSRunner(Runner):
    def predict(self, images, queries, *, classes=None, supports=None) -> list:
        from segfast.data.fewshot import _resize_image, _resize_mask, connected_components
        from segfast.inference.predictor import as_image
        from segfast.ops import object_polygons

        self.check(classes, None)
        if supports is None or any(not s for s in supports):
            raise ValueError("support: LLaFS needs at least one (image, mask) support pair per query")
        size = self.model.image_size
        if len({len(s) for s in supports}) != 1:
            raise ValueError("support: every query of a batch needs the same number of support pairs")

        def view(image, mask=None):
            img = _resize_image(torch.from_numpy(as_image(image)).permute(2, 0, 1), size)
            if mask is None:
                return img
            m = _resize_mask(torch.as_tensor(np.asarray(support_mask(mask))).bool(), size)
            parts = connected_components(m)
            return img, m, object_polygons(parts, self.model.options.num_vertices)

        views = [[view(i, m) for i, m in pairs] for pairs in supports]
        batch = {
            "support_images": torch.stack([torch.stack([v[0] for v in vs]) for vs in views]).to(self.device),
            "support_masks": torch.stack([torch.stack([v[1] for v in vs]) for vs in views]).to(self.device),
            "support_polygons": [[v[2] for v in vs] for vs in views],
            "query_image": torch.stack([view(i) for i in images]).to(self.device),
        }
        if all(q.strip() for q in queries):
            batch["class_names"] = [q.strip() for q in queries]
        out = self.model.predict(batch)
        return [
            (_resize_nearest(out["masks"][b : b + 1].cpu(), images[b].shape[:2]), out["texts"][b], None)
            for b in range(len(images))
        ]


def support_mask(mask) -> np.ndarray:
    """A support mask from a path (nonzero pixels are the object), a PIL image or an array."""
    from pathlib import Path

    from PIL import Image

    if isinstance(mask, (str, Path)):
        with Image.open(mask) as im:
            mask = np.asarray(im.convert("L"))
    elif isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L"))
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    if mask.ndim != 2:
        raise ValueError(f"support: a mask must be (H, W), got shape {mask.shape}")
    return mask != 0


RUNNERS = {
    "lisa": SegTokenRunner,
    "lasagna": LaSagnARunner,
    "segllm": SegLLMRunner,
    "llavaseg": LLaVASegRunner,
    "llm-seg": LLMSegRunner,
    "llafs": LLaFSRunner,
}


def runner(system: str, model, settings: dict) -> Runner:
    if system not in RUNNERS:
        raise ValueError(f"system {system!r} has no inference runner (known: {', '.join(RUNNERS)})")
    return RUNNERS[system](model, settings)
