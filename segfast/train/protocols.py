"""Benchmark protocols: the one place that names how each number segfast evaluates is produced
(split, which queries, prompt, ignore rule, resolution, metric) and what the papers report on
that benchmark (paper, table, row), so a reproduction shows its distance to the papers.

    segfast evaluate --checkpoint runs/lisa/checkpoints/step-010000 --benchmark refcoco-val \
        data.options.root=/data/refer_seg

The protocol fixes the reader options that define the benchmark (format, dataset, split); the
rest (root, image sizes, proposals, chain-of-thought cache) come from the checkpoint's own data
config and the command line. The mechanics live with the readers: LISA's ValDataset queries
(segfast.data.referring.benchmark_queries, segfast.data.conversations.benchmark_round), ignored
pixels (annotation_masks) and scoring at the original resolution (segfast.frames
.score_at_original); every sample is scored once on any number of processes
(segfast.train.evaluation). Paper numbers are percentages as printed in the papers' tables
(/work/shared/papers); none is derived here.
"""

from dataclasses import dataclass, field

from segfast.config import ConfigError, check_name


@dataclass(frozen=True)
class Reported:
    paper: str
    table: str
    row: str
    metric: str
    value: float


@dataclass(frozen=True)
class Protocol:
    name: str
    title: str
    readers: tuple  # the datasets (one per model family) that read this benchmark
    data: dict  # the reader options the protocol fixes
    queries: str
    prompt: str
    ignore: str
    resolution: str
    metrics: dict  # the paper's metric name -> segfast's result key
    source: str
    reported: tuple = field(default=())
    fractions: tuple = field(default=())  # metrics the papers print as fractions (not percent)

    def data_section(self, data: dict) -> dict:
        """The data config to evaluate with: the checkpoint's section for a reader of this
        benchmark (a mixture's member of the same format first), the protocol's options over it."""
        parts = (data.get("options") or {}).get("datasets", []) if data.get("name") == "mixture" else [data]
        readable = [p for p in parts if p.get("name") in self.readers]
        same = [p for p in readable if (p.get("options") or {}).get("format") == self.data.get("format")]
        if not readable:
            raise ConfigError(
                f"benchmark {self.name}: the checkpoint's data ({[p.get('name') for p in parts]}) has no "
                f"reader of it ({', '.join(self.readers)}); give data.name and data.options on the "
                "command line"
            )
        part = (same or readable)[0]
        return {"name": part["name"], "options": {**(part.get("options") or {}), **self.data}}

    def check(self, data) -> None:
        """ConfigError when overrides changed what the protocol fixes."""
        check_name(f"benchmark {self.name}: data.name", data.name, self.readers)
        for key, value in self.data.items():
            if data.options.get(key) != value:
                raise ConfigError(
                    f"benchmark {self.name} fixes data.options.{key}={value!r}; the command line set "
                    f"{data.options.get(key)!r}"
                )

    def describe(self) -> str:
        return "\n".join(
            [
                f"{self.name}: {self.title}",
                f"  queries:    {self.queries}",
                f"  prompt:     {self.prompt}",
                f"  ignore:     {self.ignore}",
                f"  resolution: {self.resolution}",
                f"  metrics:    {', '.join(self.metrics)}",
                f"  protocol:   {self.source}",
            ]
        )

    def compare(self, result: dict) -> str:
        """segfast's numbers beside the papers' (percent), with the difference."""
        ours = {
            m: (1 if m in self.fractions else 100) * result[k]
            for m, k in self.metrics.items()
            if isinstance(result.get(k), (int, float))
        }
        lines = [
            f"  segfast ({result.get('eval/samples', '?')} samples): "
            + ", ".join(f"{m} {ours[m]:.2f}" if m in ours else f"{m} n/a" for m in self.metrics)
        ]
        for r in self.reported:
            delta = f" (segfast {ours[r.metric] - r.value:+.2f})" if r.metric in ours else ""
            lines.append(f"  {r.paper} {r.table}, {r.row}: {r.metric} {r.value}{delta}")
        return "\n".join(lines)


REFER_READERS = ("seg-conversations", "referring", "seg-queries", "multiround")
REFER_QUERIES = "every sentence of every referent of the split, each its own single-round query (LISA's ValDataset)"
REFER_PROMPT = (
    "LISA: '<image>\\n What is {sentence} in this image? Please output segmentation mask.' with the answer "
    "'[SEG].' (LaSagnA: '<SEG>.') teacher-forced (LISA's ValDataset); LLM-Seg asks the same; LLaVASeg "
    "its chain of thought; SegLLM (multiround) a validation template per query, scored in SAM's 1024 frame as "
    "its authors count"
)
ORIGINAL = (
    "the image's original resolution: mask logits cropped to the unpadded frame and resized back "
    "(segment-anything's postprocess_masks); LLM-Seg's selected proposals (SAM ran on the image scaled to "
    "<= 1024) resized there (nearest), as the authors' validation does"
)
LLMSEG_SELECTION = "LLM-Seg: the proposals with predicted IoP > 0.5 (model.options.selection, Table 3's default)"
LISA_VAL = "LISA utils/dataset.py ValDataset + train_ds.py validate (intersectionAndUnionGPU, ignore_index 255)"
CIOU_GIOU = {"cIoU": "eval/iou/cIoU", "gIoU": "eval/iou/gIoU"}

# cIoU tables of the refCOCO family: per paper, table and row, the values in split order
REFER_COLUMNS = [
    ("refcoco", "val"),
    ("refcoco", "testA"),
    ("refcoco", "testB"),
    ("refcoco+", "val"),
    ("refcoco+", "testA"),
    ("refcoco+", "testB"),
    ("refcocog", "val"),
    ("refcocog", "test"),
]
REFER_TABLES = [
    ("LaSagnA", "Table 3", "LaSagnA (ours)", (76.8, 78.7, 73.8, 66.4, 70.6, 60.1, 70.6, 71.9)),
    ("LaSagnA", "Table 3", "LISA-7B", (74.1, 76.5, 71.1, 62.4, 67.4, 56.5, 66.4, 68.5)),
    ("LLaVASeg", "Table 2", "LLaVASEg-7B", (76.2, 79.1, 72.9, 65.7, 71.4, 57.7, 69.8, 70.1)),
    ("LLaVASeg", "Table 2", "LISA-7B", (74.9, 79.1, 72.3, 65.1, 70.8, 58.1, 67.9, 70.6)),
    ("SegLLM", "Table 2", "SegLLM (ours)", (80.2, 81.5, 75.4, 70.3, 73.0, 62.5, 72.6, 73.6)),
    ("SegLLM", "Table 2", "LISA-7B", (74.1, 76.5, 71.1, 62.4, 67.4, 56.5, 66.4, 68.5)),
]


def _refer(dataset: str, split: str) -> Protocol:
    split_by = "umd" if dataset == "refcocog" else "unc"
    column = REFER_COLUMNS.index((dataset, split))
    reported = tuple(
        Reported(paper, table, f"{row} ({dataset} {split})", "cIoU", values[column])
        for paper, table, row, values in REFER_TABLES
    )
    return Protocol(
        name=f"{dataset}-{split}",
        title=f"{dataset} {split} ({split_by.upper()} split), referring segmentation",
        readers=REFER_READERS,
        data={"format": "refcoco", "dataset": dataset, "split_by": split_by, "eval_split": split},
        queries=REFER_QUERIES,
        prompt=REFER_PROMPT,
        ignore="none",
        resolution=ORIGINAL,
        metrics=CIOU_GIOU,
        source=f"{LISA_VAL}; refer toolkit refs({split_by}).p",
        reported=reported,
    )


def _r(paper, table, row, **values) -> tuple:
    return tuple(Reported(paper, table, row, metric, value) for metric, value in values.items())


REASONSEG_VAL = (
    *_r("LLM-Seg", "Table 1", "LISA (Zero-Shot ×)", gIoU=51.0, cIoU=50.6, ncIoU=48.1),
    *_r("LLM-Seg", "Table 1", "LISA (20 epochs, Zero-Shot ✓)", gIoU=44.4, cIoU=46.0),
    *_r("LLM-Seg", "Table 1", "LISA (20 epochs, Zero-Shot ×)", gIoU=52.9, cIoU=54.0),
    *_r("LLM-Seg", "Table 1", "LLM-Seg (Zero-Shot ✓)", gIoU=47.4, cIoU=35.4, ncIoU=43.5),
    *_r("LLM-Seg", "Table 1", "LLM-Seg (Zero-Shot ×)", gIoU=52.3, cIoU=47.5, ncIoU=48.8),
    *_r("LLM-Seg", "Table 1", "LLM-Seg (20 epochs, Zero-Shot ×)", gIoU=55.4, cIoU=45.6, ncIoU=51.0),
    # LLM-Seg's ablations, all 10 epochs on ReasonSeg val (model.options: fusion, heads, selection, backbone)
    *_r("LLM-Seg", "Table 2", "MLP instead of fusion, IoU head (fusion=mlp heads=iou)", gIoU=49.1, cIoU=31.8),
    *_r("LLM-Seg", "Table 2", "fusion, IoU head (heads=iou)", gIoU=48.6, cIoU=28.5),
    *_r("LLM-Seg", "Table 2", "fusion, IoP head (heads=iop)", gIoU=51.1, cIoU=43.6),
    *_r("LLM-Seg", "Table 3", "Top1 IoU (selection=top1_iou)", gIoU=49.6, cIoU=35.4),
    *_r("LLM-Seg", "Table 3", "Top1 IoU + Threshold IoP (selection=top1_iou+iop_threshold)", gIoU=53.8, cIoU=42.2),
    *_r("LLM-Seg", "Table 3", "Threshold IoP from Top5 IoU (selection=top5_iou_iop_threshold)", gIoU=51.4, cIoU=43.6),
    *_r("LLM-Seg", "Table 4", "CLIP (ConvNext-Large) mask embeddings", gIoU=49.3, cIoU=44.5),
    *_r("LLM-Seg", "Table 4", "SAM (ViT-H) mask embeddings (backbone=sam)", gIoU=46.2, cIoU=44.7),
    *_r("LLaVASeg", "Table 1", "LISA-7B", gIoU=44.4, cIoU=46.0),
    *_r("LLaVASeg", "Table 1", "LISA-13B (explain)", gIoU=57.3, cIoU=60.7),
    *_r("LLaVASeg", "Table 1", "LLaVASEg-7B", gIoU=54.8, cIoU=49.9),
    *_r("LLaVASeg", "Table 1", "LLaVASEg-13B", gIoU=59.1, cIoU=52.8),
    # LLaVASeg Table 1 prints ROUGE-L and CIDEr as fractions (the protocol's `fractions`)
    *_r("LLaVASeg", "Table 1", "LLaVASEg-13B, reason step vs explanations", **{"ROUGE-L": 0.393, "CIDEr": 0.796}),
    *_r("LLaVASeg", "Table 1", "LISA-13B (explain)", CIDEr=0.107),  # its ROUGE-L 0.290 reads as 0.29 here
    *_r("SegLLM", "Table 5", "SegLLM, Val (gIoU printed as mIoU)", gIoU=57.2, cIoU=54.3),
    *_r("SegLLM", "Table 5", "LISA, Val (gIoU printed as mIoU)", gIoU=53.6, cIoU=52.3),
    *_r("LaSagnA", "Table 3", "LaSagnA (ours), reasonSeg val", cIoU=47.2),
    *_r("LaSagnA", "Table 3", "LISA-7B, reasonSeg val", cIoU=46.0),
)
# LaSagnA Table 4 (gRefCOCO; LaSagnA zero-shot): per row, per split (val, testA, testB) cIoU and gIoU
GREFCOCO = [
    ("LaSagnA (ours), zero-shot", [dict(cIoU=38.1, gIoU=32.4), dict(cIoU=50.4, gIoU=47.3), dict(cIoU=42.1, gIoU=38.9)]),
    ("LISA-7B (trained on it)", [dict(cIoU=38.7, gIoU=32.2), dict(cIoU=52.6, gIoU=48.5), dict(cIoU=44.8, gIoU=39.7)]),
    ("GSVA-7B", [dict(cIoU=61.7, gIoU=63.3), dict(cIoU=69.2, gIoU=70.1), dict(cIoU=60.3, gIoU=61.3)]),
]
REASONSEG_TEST = (
    *_r("SegLLM", "Table 5", "SegLLM, Test (gIoU printed as mIoU)", gIoU=52.4, cIoU=48.4),
    *_r("SegLLM", "Table 5", "LISA, Test (gIoU printed as mIoU)", gIoU=48.7, cIoU=48.8),
)


def _reasonseg(split: str, reported: tuple) -> Protocol:
    return Protocol(
        name=f"reasonseg-{split}",
        title=f"ReasonSeg {split}, reasoning segmentation",
        readers=REFER_READERS,
        data={"format": "reasonseg", "eval_split": split},
        queries="the first query of each json (text[0]), one single-round query per image (LISA's ValDataset)",
        prompt=(
            "LISA: '<image>\\n {text} Please output segmentation mask.' when is_sentence, else '<image>\\n What is "
            "{text} in this image? Please output segmentation mask.', answer '[SEG].' (LLM-Seg's validation asks "
            f"the same); LLaVASeg its chain of thought. {LLMSEG_SELECTION}"
        ),
        ignore=(
            "shapes labelled 'flag' skipped; a label containing 'ignore' marks pixels left out of every metric "
            "(255); any other label is target; shapes filled largest first (LISA's get_mask_from_json)"
        ),
        resolution=ORIGINAL,
        fractions=("ROUGE-L", "CIDEr"),
        metrics={
            **CIOU_GIOU,
            "ncIoU": "eval/nciou/ncIoU",
            "ROUGE-L": "eval/dialogue/ROUGE-L",
            "CIDEr": "eval/dialogue/CIDEr",
        },
        source=(
            f"{LISA_VAL}; ncIoU (LLM-Seg §5.1.1; its training.py validate_threshold): prediction and target "
            "resized to 1024x1024 (nearest) before cIoU, reported by the llm-seg model; ROUGE-L / CIDEr "
            "(LLaVASeg: its reason step against LISA's explanatory answers, data.options.explanations)"
        ),
        reported=reported,
    )


LLMSEG40K = Protocol(
    name="llmseg40k-val",
    title="LLM-Seg40K val (validation.json), reasoning segmentation",
    readers=("referring",),
    data={"format": "llmseg40k", "eval_split": "val"},
    queries="every question of every image of validation.json, each its own single-round query",
    prompt=(
        "'<image> {question} Please output segmentation mask.', answer '[SEG].' teacher-forced "
        f"(the authors' ValDataSet_LLMSeg). {LLMSEG_SELECTION}"
    ),
    ignore="none",
    resolution=ORIGINAL,
    metrics=CIOU_GIOU,
    source=(
        "LLM-Seg §5.2 (nIoU left out: small variance of image sizes); validate_llmseg.py scoring, on every "
        "question (the released ValDataSet_LLMSeg returns only the first 100 of its shuffled samples)"
    ),
    reported=(
        *_r("LLM-Seg", "Table 5", "LISA (Zero-Shot ✓)", gIoU=33.19, cIoU=37.97),
        *_r("LLM-Seg", "Table 5", "LISA (Zero-Shot ×)", gIoU=37.59, cIoU=48.49),
        *_r("LLM-Seg", "Table 5", "LLM-Seg (Zero-Shot ✓)", gIoU=36.02, cIoU=39.42),
        *_r("LLM-Seg", "Table 5", "LLM-Seg (Zero-Shot ×)", gIoU=45.47, cIoU=54.18),
    ),
)


def _semantic(fmt: str, title: str, reported: tuple) -> Protocol:
    return Protocol(
        name=f"{fmt}-val",
        title=title,
        readers=("semantic-queries",),
        data={"format": fmt},
        queries="every validation image, each asked its own class list (the dataset's names)",
        prompt=(
            "LaSagnA: '<image>\\nCan you segment the {names} in this image?' over every class in one question "
            "(model.options.chunk_size 0, Table 6's N), up to as many new tokens as naming every class takes"
        ),
        ignore=(
            "the layout's ignored label (ADE20K's 0, COCO-Stuff's 255, Cityscapes' non-evaluated ids, ...) -> 255, "
            "then class 0, as test_sem.py scores it (model.options.unlabelled_as_first_class; false: left out)"
        ),
        resolution=(
            "original: each <SEG> mask's logits resized back (SAM's postprocess_masks), a pixel takes the class of the "
            "highest logit above 0, else class 0 (test_sem.py's argmax; unlabelled_as_first_class=false: none)"
        ),
        metrics={"mIoU": f"eval/miou/{fmt}/mIoU"},
        source="LaSagnA Sec. 4.1 (mIoU at single scale), test_sem.py (all classes asked at once)",
        reported=reported,
    )


def _grefcoco(split: str, reported: tuple) -> Protocol:
    return Protocol(
        name=f"grefcoco-{split}",
        title=f"gRefCOCO {split} (UNC), generalized referring segmentation (several or no targets)",
        readers=("seg-conversations",),
        data={"format": "grefcoco", "eval_split": split},
        queries="every sentence of every expression of the split, each its own single-round query",
        prompt=(
            "LISA's ValDataset question '<image>\\n What is {sentence} in this image? Please output segmentation "
            "mask.', "
            "the answer generated: the prediction is the union of its [SEG]/<SEG> masks, empty without one"
        ),
        ignore="none; a no-target expression scores IoU 1 with an empty prediction, else 0",
        resolution=ORIGINAL,
        metrics=CIOU_GIOU,
        source="GRES (Liu et al. 2023) gIoU/cIoU over all expressions; LISA's grefer layout",
        reported=reported,
    )


FEWSHOT_EPISODES, FEWSHOT_SEEDS = 1000, 5  # BAM's evaluation: 1000 episodes under each of 5 seeds


def _fewshot(dataset: str, fold: int, shots: int, value: float | None) -> Protocol:
    name = {"pascal": "pascal5i", "coco": "coco20i"}[dataset]
    draw = "the query's class first, uniformly (HSNet's COCO-20i)" if dataset == "coco" else "an (image, class) pair"
    return Protocol(
        name=f"{name}-fold{fold}-{shots}shot",
        title=f"{name} fold {fold}, {shots}-shot few-shot segmentation",
        readers=("fewshot",),
        data={
            "dataset": dataset,
            "fold": fold,
            "shots": shots,
            "episodes": FEWSHOT_EPISODES,
            "seeds": FEWSHOT_SEEDS,
            "sampling": "classes" if dataset == "coco" else "pairs",
        },
        queries=(
            f"{FEWSHOT_EPISODES} episodes x {FEWSHOT_SEEDS} seeds of the fold's test classes, each drawing {draw} "
            "and its supports; mIoU per seed, averaged (BAM); data.options.min_class_pixels=2048 for "
            "PFENet / BAM's small-object filter"
        ),
        prompt="LLaFS's instruction (Supp A.6)",
        ignore="the label's 255 (PASCAL's boundaries) ignored",
        metrics={"mIoU": "eval/fold/mIoU"},
        resolution="each label's original size: the refined logits resized bilinearly (HSNet / PFENet / BAM)",
        source="HSNet test.py / PFENet / BAM: per-class summed intersections over unions, mean over the fold's classes",
        reported=_r("LLaFS", "Table 1", f"LLaFS ({shots}-shot, Fold-{fold})", mIoU=value) if value else (),
    )


# LLaFS Table 1, row LLaFS: PASCAL-5i 1-shot and COCO-20i 1-/5-shot per fold (the PASCAL 5-shot cells are
# one short in our copy of the table, so they are left out rather than guessed)
LLAFS = {
    ("pascal", 1): (74.2, 78.8, 72.3, 68.5),
    ("coco", 1): (47.5, 58.8, 56.2, 53.0),
    ("coco", 5): (53.2, 63.8, 63.1, 60.0),
}

# ---- SegLLM's own benchmarks (its Tables 1, 4, 6, 7, 8) --------------------------------------------
SEGLLM_FRAME = (
    "SAM's frame (longest side 1024, the unpadded region), as the authors count in their decoder's 1024 frame"
)
SEGLLM_SOURCE = "SegLLM's llava_trainer.evaluate (per-round mIoU = mean IoU, oIoU = cIoU, P@0.5 box accuracy)"
# Table 1: cIoU of rounds 2-8 on MR-RefCOCO/+/g, rows SegLLM, LISA, GLaMM
MR_REFER = {
    "refcoco": {
        "SegLLM": (81.9, 81.7, 78.4, 80.3, 74.5, 69.3, 70.5),
        "LISA": (60.6, 58.9, 61.3, 61.0, 60.7, 54.4, 51.9),
        "GLaMM": (59.5, 61.6, 59.3, 62.6, 62.6, 52.1, 50.7),
    },
    "refcoco+": {
        "SegLLM": (78.0, 78.5, 74.3, 76.5, 73.4, 64.0, 59.0),
        "LISA": (51.4, 51.2, 49.0, 48.5, 45.6, 42.8, 36.9),
        "GLaMM": (52.9, 58.3, 54.2, 50.5, 54.8, 48.4, 43.6),
    },
    "refcocog": {
        "SegLLM": (79.2, 76.0, 77.1, 66.9, 68.9, 71.0, 54.9),
        "LISA": (61.3, 52.1, 56.0, 47.5, 39.9, 55.1, 36.3),
        "GLaMM": (65.4, 57.8, 55.4, 49.4, 40.8, 57.8, 38.4),
    },
}
MR_HARD = {"refcoco": 69.6, "refcoco+": 69.4, "refcocog": 63.7}  # Table 8, last row (all components)
# Table 4: Acc@0.5 of SegLLM-7B per split, in REFER_COLUMNS order
REC_SEGLLM = (90.0, 92.1, 86.2, 82.2, 85.5, 76.1, 83.9, 85.9)
# Table 7, column "LISA" (LISA's question templates), row SegLLM: cIoU on refCOCO/+/g val
LISA_QUESTIONS = {"refcoco": 80.4, "refcoco+": 70.7, "refcocog": 72.3}


def _rounds(first: int, last: int, metric: str, key: str) -> dict:
    """The paper's per-round metric names (rounds from 1) -> segfast's keys (rounds from 0)."""
    return {f"{metric} round {r}": f"eval/rounds/round{r - 1}/{key}" for r in range(first, last + 1)}


def _mr_refer(dataset: str) -> Protocol:
    reported = tuple(
        Reported("SegLLM", "Table 1", f"{row} (MR-{dataset})", f"cIoU round {r}", values[r - 2])
        for row, values in MR_REFER[dataset].items()
        for r in range(2, 9)
    )
    return Protocol(
        name=f"mr-{dataset}-val",
        title=f"MR-{dataset} val (MRSeg), multi-round referring segmentation",
        readers=("multiround",),
        data={
            "format": "mrseg",
            "eval_conversations": f"all_data_mix_val/mr_{dataset}_val.json",
            "eval_memory": "own",
            "max_rounds": 0,  # every round: the eval scripts pass no --limit_rounds
        },
        queries="every round of every released validation conversation, answered round by round",
        prompt="the released questions; each earlier round's encoding is the model's own mask (the authors' --ar_eval)",
        ignore="none",
        resolution=SEGLLM_FRAME,
        metrics={**_rounds(1, 8, "cIoU", "cIoU"), **_rounds(1, 8, "mIoU", "gIoU"), "cIoU": "eval/rounds/cIoU"},
        source=f"{SEGLLM_SOURCE}; scripts/eval/eval_mr_refcoco.sh",
        reported=reported,
    )


def _mr_hard(dataset: str) -> Protocol:
    return Protocol(
        name=f"mr-{dataset}-hard-val",
        title=f"MR-{dataset} hard val (MRSeg-hard): the other object of a class, given one as a mask",
        readers=("multiround",),
        data={"format": "mrseg", "eval_conversations": f"all_data_mix_val/mr_{dataset}_hard_val.json"},
        queries="every released hard validation conversation (one round, the reference given as an encoding)",
        prompt="the released questions with the given mask's encoding",
        ignore="none",
        resolution=SEGLLM_FRAME,
        metrics={"cIoU": "eval/iou/cIoU", "mIoU": "eval/iou/gIoU"},
        source=SEGLLM_SOURCE,
        reported=_r(
            "SegLLM", "Table 8", f"mask-enc + box-enc + ref loss, Multi-Round (hard) {dataset}", cIoU=MR_HARD[dataset]
        ),
    )


MR_PACO = Protocol(
    name="mr-paco-val",
    title="MR-PACO val (MRSeg), multi-round hierarchical segmentation",
    readers=("multiround",),
    data={
        "format": "mrseg",
        "eval_conversations": "all_data_mix_val/mr_paco_val.json",
        "eval_memory": "ground_truth",
        "max_rounds": 0,
    },
    queries="every round of every released validation conversation",
    prompt="the released questions; earlier rounds encoded from the ground truth (the authors' eval_mr_paco.sh "
    "runs without --ar_eval and with --eval_use_gt_mask_encode)",
    ignore="none",
    resolution=SEGLLM_FRAME,
    metrics={**_rounds(1, 5, "mIoU", "gIoU"), **_rounds(1, 5, "cIoU", "cIoU")},
    source=f"{SEGLLM_SOURCE}; scripts/eval/eval_mr_paco.sh",
    reported=tuple(
        Reported("SegLLM", "Table 6", f"{row}, round {r}", f"{metric} round {r}", v)
        for row, metric, values in (
            ("SegLLM", "mIoU", (54.9, 37.6, 32.9, 33.3, 31.6)),
            ("LISA", "mIoU", (34.7, 10.6, 13.7, 11.5, 11.6)),
            ("SegLLM", "cIoU", (65.3, 49.7, 40.9, 39.4, 41.9)),
            ("LISA", "cIoU", (45.6, 15.5, 21.3, 18.7, 20.5)),
        )
        for r, v in enumerate(values, 1)
    ),
)


def _rec(dataset: str, split: str) -> Protocol:
    split_by = "umd" if dataset == "refcocog" else "unc"
    return Protocol(
        name=f"rec-{dataset}-{split}",
        title=f"{dataset} {split}, referring expression comprehension (the box of the predicted mask)",
        readers=("multiround",),
        data={"format": "refcoco", "dataset": dataset, "split_by": split_by, "eval_split": split},
        queries=REFER_QUERIES,
        prompt="SegLLM's validation templates, answer 'It is [SEG].' teacher-forced",
        ignore="none",
        resolution=SEGLLM_FRAME,
        metrics={"Acc@0.5": "eval/rec/Acc@0.5"},
        source=f"{SEGLLM_SOURCE}; boxes from the masks (SegLLM's HIPIE predicts them), IoU > 0.5",
        reported=_r(
            "SegLLM",
            "Table 4",
            f"SegLLM-7B ({dataset} {split})",
            **{"Acc@0.5": REC_SEGLLM[REFER_COLUMNS.index((dataset, split))]},
        ),
    )


def _lisa_questions(dataset: str) -> Protocol:
    split_by = "umd" if dataset == "refcocog" else "unc"
    return Protocol(
        name=f"lisa-questions-{dataset}-val",
        title=f"{dataset} val asked with LISA's question (SegLLM's template-robustness split)",
        readers=("multiround",),
        data={
            "format": "refcoco",
            "dataset": dataset,
            "split_by": split_by,
            "eval_split": "val",
            "question_set": "lisa",
        },
        queries=REFER_QUERIES,
        prompt="LISA's '<image> What is {sentence} in this image? Please output segmentation mask.'",
        ignore="none",
        resolution=SEGLLM_FRAME,
        metrics=CIOU_GIOU,
        source=f"{SEGLLM_SOURCE}; scripts/eval/eval_refcoco_templates.sh",
        reported=_r("SegLLM", "Table 7", f"SegLLM (ours), LISA templates ({dataset})", cIoU=LISA_QUESTIONS[dataset]),
    )


SEGLLM_PROTOCOLS = [
    *(_mr_refer(d) for d in MR_REFER),
    *(_mr_hard(d) for d in MR_HARD),
    MR_PACO,
    *(_rec(d, s) for d, s in REFER_COLUMNS),
    *(_lisa_questions(d) for d in LISA_QUESTIONS),
]

PROTOCOLS = {
    p.name: p
    for p in [
        *(_refer(d, s) for d, s in REFER_COLUMNS),
        _reasonseg("val", REASONSEG_VAL),
        _reasonseg("test", REASONSEG_TEST),
        LLMSEG40K,
        _semantic(
            "ade20k",
            "ADE20K val (150 classes), semantic segmentation",
            (
                *_r("LaSagnA", "Table 1", "LaSagna (ours)", mIoU=42.0),
                *_r("LaSagnA", "Table 1", "LISA-7B", mIoU=19.7),
                *_r("LaSagnA", "Table 2", "LaSagna† (trained on COCO-Stuff only), A-150 open set", mIoU=14.3),
                *_r("LaSagnA", "Table 5", "+ class list, no OpenImage", mIoU=35.2),
                *_r("LaSagnA", "Table 5", "+ target order consistency (LaSagnA), no OpenImage", mIoU=38.6),
                *_r("LaSagnA", "Table 6", "chunk size N/4", mIoU=31.0),
            ),
        ),
        _semantic(
            "cocostuff",
            "COCO-Stuff val, semantic segmentation",
            (
                *_r("LaSagnA", "Table 1", "LaSagna (ours)", mIoU=43.9),
                *_r("LaSagnA", "Table 1", "LISA-7B", mIoU=24.4),
                *_r("LaSagnA", "Table 5", "+ class list, no OpenImage", mIoU=40.5),
                *_r("LaSagnA", "Table 5", "+ target order consistency (LaSagnA), no OpenImage", mIoU=43.2),
                *_r("LaSagnA", "Table 6", "chunk size N/4", mIoU=34.3),
            ),
        ),
        _semantic(
            "cityscapes",
            "Cityscapes val (19 classes), semantic segmentation",
            (
                *_r("LaSagnA", "Table 1", "LaSagna (ours)", mIoU=63.2),
                *_r("LaSagnA", "Table 1", "LISA-7B", mIoU=38.5),
                *_r("LaSagnA", "Table 5", "+ target order consistency (LaSagnA), no OpenImage", mIoU=61.3),
            ),
        ),
        _semantic(
            "pascal-context-459",
            "PASCAL-Context val, 459 classes (PC-459), open-set semantic segmentation",
            (
                *_r("LaSagnA", "Table 2", "LaSagna (ours)", mIoU=9.8),
                *_r("LaSagnA", "Table 2", "LaSagna† (trained on COCO-Stuff only)", mIoU=8.5),
            ),
        ),
        _semantic(
            "pascal-context-59",
            "PASCAL-Context val, 59 classes (PC-59), open-set semantic segmentation",
            (
                *_r("LaSagnA", "Table 2", "LaSagna (ours)", mIoU=39.6),
                *_r("LaSagnA", "Table 2", "LaSagna† (trained on COCO-Stuff only)", mIoU=46.1),
            ),
        ),
        _semantic(
            "pascal-voc-20",
            "PASCAL VOC 2012 val, 20 classes without background (PAS-20), open-set semantic segmentation",
            (
                *_r("LaSagnA", "Table 2", "LaSagna (ours)", mIoU=61.8),
                *_r("LaSagnA", "Table 2", "LaSagna† (COCO-Stuff only; the cut cell, from §4.2's text)", mIoU=69.8),
            ),
        ),
        *(
            _grefcoco(split, tuple(r for row, values in GREFCOCO for r in _r("LaSagnA", "Table 4", row, **values[k])))
            for k, split in enumerate(("val", "testA", "testB"))
        ),
        *SEGLLM_PROTOCOLS,
        *(
            _fewshot(d, f, s, LLAFS[d, s][f] if (d, s) in LLAFS else None)
            for d in ("pascal", "coco")
            for s in (1, 5)
            for f in range(4)
        ),
    ]
}


def get(name: str) -> Protocol:
    check_name("--benchmark", name, PROTOCOLS)
    return PROTOCOLS[name]


def for_fold(dataset: str, fold: int, shots: int) -> Protocol | None:
    """The few-shot protocol of `segfast llafs-eval`'s arguments, when the registry has it."""
    return next(
        (
            p
            for p in PROTOCOLS.values()
            if p.readers == ("fewshot",)
            and (p.data["dataset"], p.data["fold"], p.data["shots"]) == (dataset, fold, shots)
        ),
        None,
    )
