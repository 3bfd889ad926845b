"""One query, one target mask per sample: what LLaVASeg trains and is evaluated on.

Layouts (local paths; the readers of segfast.data.referring): reasonseg (long queries: the
chain of thought's reason step is generated) and refcoco/+/g in the refer layout (short
expressions: the reason step is simulated); synthetic (generated boxes, the built-in default;
every other sample asks a question about a box). In training every query of every annotation is
a sample; the engine's "eval" split reads the files' eval_split (val; or test, testA, ...) and
scores the benchmark's queries (segfast.data.referring.benchmark_queries: ReasonSeg's text[0]).

Samples: the frames of segfast.frames, query, kind ("reasoning" | "short"), key (stable
across runs and machines: the image file name and the query), masks (1, S, S) bool, with
cot_cache (a directory written by `segfast cot-cache`) cot: the cached chain-of-thought record,
and in evaluation original_masks (1, H, W) and original_ignore (H, W) at the image's resolution.
"""

from pathlib import Path

import torch

from segfast.data.referring import annotation_masks, benchmark_queries, read_entries
from segfast.data.rng import content_rng
from segfast.data.scenes import synthetic_scene
from segfast.frames import clip_input, frame_masks, model_inputs, read_rgb
from segfast.registry import dataset
from segfast.text.synthetic import SYNTHETIC_REASONING

FORMATS = ("reasonseg", "refcoco", "synthetic")


@dataset("seg-queries")
class SegQueries(torch.utils.data.Dataset):
    def __init__(
        self,
        format: str = "synthetic",
        root: str = "",
        split: str = "train",
        image_size: int = 64,
        clip_size: int = 32,
        seed: int = 0,
        length: int = 256,
        dataset: str = "refcoco",
        split_by: str = "unc",
        eval_split: str = "val",
        cot_cache: str = "",
    ):
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        self.format, self.split, self.seed = format, split, seed
        self.size, self.clip_size, self.cot_cache = int(image_size), int(clip_size), cot_cache
        if format == "synthetic":
            self.items = list(range(int(length)))
        else:
            entries = read_entries(format, root, split, eval_split, dataset, split_by)
            self.items = (
                benchmark_queries(entries)
                if split == "eval"
                else [(e, q) for e in entries for q in range(len(e["queries"]))]
            )
        self._cot = None  # read on first use, so `segfast cot-cache` can build the dataset before the cache exists

    def __len__(self):
        return len(self.items)

    def request(self, i: int, target: dict | None = None) -> dict:
        """{index, key, query, kind} of sample i: what the chain of thought needs (target: the
        synthetic scene's chosen instance, when the caller has drawn it already)."""
        if self.format == "synthetic":
            name, image = (target or self._scene(i)[2])["category"], f"synthetic-{self.seed}-{self.split}-{i}"
            query, kind = (SYNTHETIC_REASONING.format(name=name), "reasoning") if i % 2 else (name, "short")
        else:
            entry, q = self.items[i]
            query, image = entry["queries"][q], Path(entry["image"]).name
            kind = "reasoning" if self.format == "reasonseg" else "short"
        return {"index": i, "key": f"{image}\t{query}", "query": query, "kind": kind}

    def requests(self) -> list:
        return [self.request(i) for i in range(len(self))]

    def cot(self, key: str) -> dict:
        if self._cot is None:
            self._cot = self._read_cot()
        return self._cot[key]

    def _read_cot(self) -> dict:
        """The cache's records, checked to cover every sample (an error at the first batch, not
        at the first uncached one)."""
        from segfast.data.cot_cache import read_cache

        cached = read_cache(self.cot_cache)
        missing = [r["key"] for r in self.requests() if r["key"] not in cached]
        if missing:
            raise ValueError(
                f"cot_cache {self.cot_cache}: {len(missing)} of {len(self)} {self.split} samples have no "
                f"chain-of-thought answer (e.g. {missing[0]!r}); run segfast cot-cache with this config"
            )
        return cached

    def _scene(self, i: int) -> tuple:
        rng = content_rng(self.seed, self.split, i)  # the scene and its query are the sample itself
        image, instances = synthetic_scene(rng)
        return image, instances, rng.choice(instances)

    def _image(self, i: int):
        return self._scene(i)[0] if self.format == "synthetic" else read_rgb(self.items[i][0]["image"])

    def clip_batch(self, indices: list) -> torch.Tensor:
        """(n, 3, C, C) CLIP inputs of samples `indices` (the chain of thought's images)."""
        return torch.stack([clip_input(self._image(i), self.clip_size) for i in indices])

    def __getitem__(self, i: int) -> dict:
        if self.format == "synthetic":
            image, _, target = self._scene(i)
            mask, request = torch.from_numpy(target["mask"][None]), self.request(i, target)
            ignore = torch.zeros_like(mask[0])
        else:
            image = self._image(i)
            mask, ignore = annotation_masks(self.items[i][0], *image.shape[:2])
            mask, request = mask[None], self.request(i)
        sample = {
            **model_inputs(image, self.size, self.clip_size),
            "query": request["query"],
            "kind": request["kind"],
            "key": request["key"],
            "masks": frame_masks(mask, self.size),
        }
        if self.split == "eval":
            sample.update(original_masks=mask, original_ignore=ignore)
        if self.cot_cache:
            sample["cot"] = self.cot(request["key"])
        return sample
