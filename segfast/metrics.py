"""Segmentation metrics with one definition each, exact integer state and process-count-free
results.

* gIoU: mean over samples of per-sample IoU (two empty masks score 1.0, as LISA does).
* cIoU: Σ intersections / Σ unions over all samples.
  Both take an optional `ignore` mask per sample (ReasonSeg's "ignore" regions, label 255): its
  pixels count in neither the prediction nor the target, as LISA's intersectionAndUnionGPU
  with ignore_index=255 drops them.
* ncIoU (LLM-Seg): cIoU after resizing prediction and ground truth to one size (`size`,
  nearest neighbour), so large images do not dominate.
* mIoU: per-class IoU from intersection and union pixel counts (LISA's intersectionAndUnionGPU:
  pixels whose target is `ignore_index` are dropped, as are predictions outside [0, C)); the
  mean is over classes that occur (union > 0).
* Per-round variants: meters take `num_rounds` and `update(..., round=r)` (SegLLM's
  multi-round conversations); `compute()` reports every round and the total.

All state is int64: intersections, unions and counts are exact, and per-sample IoUs are summed
in fixed point (units of 2^-32, error below 1e-9 per sample), so `sync()` — an all-reduce SUM
over torch.distributed when it is initialised — gives the same numbers on any number of
processes, in any order.
"""

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from segfast.ops import mask_area, mask_intersection
from segfast.ops.overlap import as_packed, check_same_size

IOU_SCALE = 2**32  # fixed-point unit of summed per-sample IoUs


def sync_state(state: torch.Tensor) -> torch.Tensor:
    """The state summed over all processes (itself without torch.distributed)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        backend = dist.get_backend()
        work = state.cuda() if backend == "nccl" else state.cpu()
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        return work.to(state.device)
    return state


class IoUMeter:
    """gIoU and cIoU over binary masks, optionally per conversation round."""

    # state columns: intersection, union, fixed-point IoU sum, samples
    def __init__(self, num_rounds: int = 1):
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
        self.state = torch.zeros(num_rounds, 4, dtype=torch.int64)

    def _prepare(self, *masks):
        return masks

    def update(self, pred: torch.Tensor, gt: torch.Tensor, round: int = 0, ignore: torch.Tensor | None = None) -> None:
        """pred, gt: (N, H, W) bool or packed masks of the same size; one sample per mask.
        ignore: (N, H, W) or (H, W) masks of the same kind: pixels left out of both."""
        if not 0 <= round < self.state.shape[0]:
            raise ValueError(f"round must be in [0, {self.state.shape[0]}), got {round}")
        check_same_size(pred, gt, ("pred", "gt"), matched=True)  # before packing or resizing hides it
        if ignore is not None:
            ignore = ignore.expand(len(pred), *ignore.shape[-2:]) if ignore.dim() == 2 else ignore
            check_same_size(pred, ignore, ("pred", "ignore"), matched=True)
            pred, gt, ignore = self._prepare(pred, gt, ignore)
            keep = ~as_packed("ignore", ignore)
            pp, pg = as_packed("pred", pred) & keep, as_packed("gt", gt) & keep
        else:
            pp, pg = (as_packed(name, m) for name, m in zip(("pred", "gt"), self._prepare(pred, gt)))
        inter = mask_intersection(pp, pg, matched=True).cpu()
        union = mask_area(pp).cpu() + mask_area(pg).cpu() - inter
        iou = torch.where(union > 0, inter.double() / union.clamp(min=1).double(), torch.ones_like(inter).double())
        self.state[round] += torch.stack(
            [inter.sum(), union.sum(), torch.round(iou * IOU_SCALE).long().sum(), torch.tensor(len(inter))]
        )

    def sync(self) -> "IoUMeter":
        """Sums the state over all processes (no-op without torch.distributed)."""
        self.state = sync_state(self.state)
        return self

    def _values(self, row: torch.Tensor, prefix: str) -> dict:
        inter, union, iou_sum, n = (int(x) for x in row)
        return {
            f"{prefix}gIoU": iou_sum / IOU_SCALE / n if n else float("nan"),
            f"{prefix}cIoU": inter / union if union else float("nan"),
            f"{prefix}samples": n,
        }

    def compute(self) -> dict:
        out = self._values(self.state.sum(0), "")
        if self.state.shape[0] > 1:
            for r, row in enumerate(self.state):
                out.update(self._values(row, f"round{r}/"))
        return out


class NcIoUMeter(IoUMeter):
    """LLM-Seg's normalised cIoU: masks resized to `size` (nearest) before counting; compute()
    reports it as ncIoU (and the gIoU at that size)."""

    def __init__(self, size: tuple, num_rounds: int = 1):
        super().__init__(num_rounds)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) with positive entries, got {size}")
        self.size = tuple(int(s) for s in size)

    def _prepare(self, *masks):
        for name, m in zip(("pred", "gt", "ignore"), masks):
            if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or m.dim() != 3:
                raise TypeError(f"{name} must be dense bool (N, H, W) masks for ncIoU (they are resized)")
        return tuple(F.interpolate(m[:, None].float(), size=self.size, mode="nearest")[:, 0] > 0.5 for m in masks)

    def _values(self, row, prefix):
        values = super()._values(row, prefix)
        return {k.replace("cIoU", "ncIoU"): v for k, v in values.items()}


class MIoUMeter:
    """Semantic-segmentation mIoU over label maps, optionally per round."""

    def __init__(self, num_classes: int, ignore_index: int = 255, num_rounds: int = 1):
        if num_classes < 1 or num_rounds < 1:
            raise ValueError("num_classes and num_rounds must be >= 1")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.state = torch.zeros(num_rounds, 2, num_classes, dtype=torch.int64)  # intersection, union

    def update(self, pred: torch.Tensor, target: torch.Tensor, round: int = 0) -> None:
        """pred, target: integer label maps of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise TypeError("pred and target must be integer label maps")
        if not 0 <= round < self.state.shape[0]:
            raise ValueError(f"round must be in [0, {self.state.shape[0]}), got {round}")
        c = self.num_classes
        pred, target = pred.flatten().long(), target.flatten().long()
        valid = target != self.ignore_index
        pred, target = pred[valid], target[valid]
        hit = pred[(pred == target) & (pred >= 0) & (pred < c)]
        inter = torch.bincount(hit, minlength=c)[:c]
        area_pred = torch.bincount(pred[(pred >= 0) & (pred < c)], minlength=c)[:c]
        area_target = torch.bincount(target[(target >= 0) & (target < c)], minlength=c)[:c]
        self.state[round, 0] += inter.cpu()
        self.state[round, 1] += (area_pred + area_target - inter).cpu()

    def sync(self) -> "MIoUMeter":
        self.state = sync_state(self.state)
        return self

    @staticmethod
    def _values(inter, union, prefix):
        iou = torch.where(
            union > 0,
            inter.double() / union.clamp(min=1).double(),
            torch.full_like(inter, float("nan"), dtype=torch.float64),
        )
        present = union > 0
        miou = float(iou[present].mean()) if bool(present.any()) else float("nan")
        return {f"{prefix}mIoU": miou, f"{prefix}per_class_iou": iou.tolist()}

    def compute(self) -> dict:
        total = self.state.sum(0)
        out = self._values(total[0], total[1], "")
        if self.state.shape[0] > 1:
            for r in range(self.state.shape[0]):
                out.update(self._values(self.state[r, 0], self.state[r, 1], f"round{r}/"))
        return out


class FoldIoU:
    """Mean foreground IoU over a fold's classes (per class: summed intersections / unions). With
    `runs` > 1 (BAM's evaluation: the same number of episodes under several seeds) each run keeps
    its own sums and mIoU is the mean of the runs' mIoUs."""

    def __init__(self, classes, runs: int = 1):
        if runs < 1:
            raise ValueError(f"runs must be >= 1, got {runs}")
        self.classes = list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}
        self.state = torch.zeros(runs, len(self.classes), 2, dtype=torch.int64)

    def update(self, pred: torch.Tensor, gt: torch.Tensor, class_ids, ignore: torch.Tensor | None = None, runs=None):
        """pred, gt: (N, H, W) bool; class_ids: N class ids; ignore: (N, H, W) bool pixels to skip;
        runs: N run indices (default 0)."""
        keep = ~ignore if ignore is not None else torch.ones_like(gt)
        inter = (pred & gt & keep).flatten(1).sum(1)
        union = ((pred | gt) & keep).flatten(1).sum(1)
        runs = [0] * len(inter) if runs is None else torch.as_tensor(runs).tolist()
        for c, r, i, u in zip(torch.as_tensor(class_ids).tolist(), runs, inter.tolist(), union.tolist()):
            if c not in self.index:
                raise ValueError(f"class {c} is not one of this fold's classes {self.classes}")
            if not 0 <= r < len(self.state):
                raise ValueError(f"run {r} is not one of this meter's {len(self.state)} runs")
            self.state[r, self.index[c]] += torch.tensor([i, u])

    def sync(self) -> "FoldIoU":
        """Sums the state over all processes (no-op without torch.distributed)."""
        self.state = sync_state(self.state)
        return self

    def compute(self) -> dict:
        def iou(i, u):
            return int(i) / int(u) if u else float("nan")

        def mean(values):
            values = [v for v in values if v == v]
            return float(np.mean(values)) if values else float("nan")

        table = [[iou(i, u) for i, u in run] for run in self.state.tolist()]
        run_mious = [mean(run) for run in table]
        per_class = {c: mean([run[k] for run in table]) for k, c in enumerate(self.classes)}
        out = {"mIoU": mean(run_mious), "per_class": per_class}
        if len(table) > 1:
            out["runs"] = run_mious
        return out


def mask_box(masks: torch.Tensor) -> torch.Tensor:
    """(N, 4) float boxes (x0, y0, x1, y1), max exclusive, of (N, H, W) bool masks; an empty mask
    gets an empty box (0, 0, 0, 0)."""
    rows, cols = masks.any(2), masks.any(1)

    def extent(hit):
        ar = torch.arange(hit.shape[1], device=hit.device)
        lo = torch.where(hit, ar, hit.shape[1]).amin(1)
        hi = torch.where(hit, ar + 1, 0).amax(1)
        return lo, hi

    (x0, x1), (y0, y1) = extent(cols), extent(rows)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    return torch.where(masks.flatten(1).any(1)[:, None], boxes, torch.zeros_like(boxes))


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) IoU of matched (N, 4) boxes with exclusive max; 0 when the union is empty."""
    w = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    h = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = w * h
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(inter))


class BoxAccuracyMeter(IoUMeter):
    """Referring expression comprehension accuracy (Acc@0.5): the share of samples whose box IoU
    with the target exceeds `threshold`, boxes taken from the masks (SegLLM's Table 4; its code
    counts IoU > 0.5). Optionally per round; exact integer state, synced and reported per round
    as IoUMeter does."""

    def __init__(self, num_rounds: int = 1, threshold: float = 0.5):
        if num_rounds < 1:
            raise ValueError(f"num_rounds must be >= 1, got {num_rounds}")
        self.threshold = float(threshold)
        self.state = torch.zeros(num_rounds, 2, dtype=torch.int64)  # hits, samples

    def update(self, pred: torch.Tensor, gt: torch.Tensor, round: int = 0) -> None:
        """pred, gt: (N, H, W) bool masks, one sample each."""
        if not 0 <= round < self.state.shape[0]:
            raise ValueError(f"round must be in [0, {self.state.shape[0]}), got {round}")
        if pred.shape != gt.shape or pred.dim() != 3:
            raise ValueError(f"pred and gt must be (N, H, W) of one shape, got {tuple(pred.shape)}, {tuple(gt.shape)}")
        hits = box_iou(mask_box(pred.bool()), mask_box(gt.bool())) > self.threshold
        self.state[round] += torch.tensor([int(hits.sum()), len(hits)])

    def _values(self, row, prefix: str) -> dict:
        hits, n = (int(x) for x in row)
        return {f"{prefix}Acc@0.5": hits / n if n else float("nan"), f"{prefix}samples": n}
