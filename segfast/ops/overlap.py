"""Mask overlap: intersection counts, areas, IoU, IoP and mask NMS.

Every function takes masks as dense bool (N, H, W) or packed uint8 (N, H, 8 * ceil(W / 64))
(see segfast.ops.packing); both operands must have the same H and W. All results derive from
exact int64 counts, so every backend gives identical numbers.

Backends of the counts: on a GPU, large pairwise problems are an int8 matrix product of the
unpacked 0/1 masks (tensor cores, int32 accumulation: exact), the rest a popcount kernel over
packed words (split over the words when there are few pairs); on the CPU a popcount kernel
(AVX-512 VPOPCNTDQ where available, faster there than an int8 product); the reference
everywhere else.

Empty cases, defined once for all of segfast (metrics included):
  * IoU of two empty masks is 1.0 (nothing predicted where there is nothing: LISA's rule, and
    what absent-target evaluation needs); an empty mask against a non-empty one is 0.0.
  * IoP of an empty prediction is 0.0, whatever the ground truth: an empty proposal covers
    nothing, so it never counts as inside a target.
  * coco=True follows pycocotools instead: 0.0 whenever the intersection is empty (so two
    empty masks score 0.0), and I / area(a) against iscrowd ground truth.
"""

import numpy as np
import torch
import torch.nn.functional as F

from segfast import _extension
from segfast.ops import _reference
from segfast.ops._backend import Backend, choose, compiled_on
from segfast.ops._checks import check_tensor
from segfast.ops.packing import pack_masks, packed_row_bytes, unpack_masks, word_aligned

# The int8 product is chosen on a GPU when n * m >= INT_MM_MIN_PAIRS * (n + m): unpacking costs
# (n + m) pixels per pixel column, the product n * m / 8 popcount-equivalents. Ours: a first
# guess from those counts; benchmarks/bench_overlap.py times both backends to tune it.
INT_MM_MIN_PAIRS = 32
INT_MM_CHUNK_BYTES = 256 << 20  # unpacked int8 operands per step of the int8 product


def as_packed(name: str, masks: torch.Tensor) -> torch.Tensor:
    """Dense bool (N, H, W) or packed uint8 (N, H, 8k) -> contiguous packed (N, H, 8k)."""
    check_tensor(name, masks, ndim=3, dtypes=(torch.bool, torch.uint8))
    if masks.dtype == torch.bool:
        return pack_masks(masks)
    if masks.shape[-1] % 8:
        raise ValueError(
            f"{name}: packed masks need a whole number of 64-bit words per row (last dim a "
            f"multiple of 8), got shape {tuple(masks.shape)}"
        )
    return word_aligned(masks)


def check_same_size(a: torch.Tensor, b: torch.Tensor, names: tuple, matched: bool) -> None:
    """Two mask sets (dense or packed) hold masks of one size (and as many masks when matched).
    Checked on the masks as given: two dense widths can pack to the same row bytes."""
    for name, m in zip(names, (a, b)):
        check_tensor(name, m, ndim=3, dtypes=(torch.bool, torch.uint8))
    row = [packed_row_bytes(m.shape[-1]) if m.dtype == torch.bool else m.shape[-1] for m in (a, b)]
    same = a.shape[1] == b.shape[1] and row[0] == row[1]
    if a.dtype == b.dtype:
        same = same and a.shape[-1] == b.shape[-1]
    if not same:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same mask size, got {tuple(a.shape[1:])} "
            f"({'packed' if a.dtype == torch.uint8 else 'dense'}) and {tuple(b.shape[1:])} "
            f"({'packed' if b.dtype == torch.uint8 else 'dense'})"
        )
    if matched and a.shape[0] != b.shape[0]:
        raise ValueError(f"matched=True needs as many {names[1]} as {names[0]}, got {a.shape[0]} and {b.shape[0]}")


def _pair(a, b, names, matched):
    check_same_size(a, b, names, matched)
    pa, pb = as_packed(names[0], a), as_packed(names[1], b)
    if pa.device != pb.device:
        raise ValueError(f"{names[1]} must be on {pa.device} like {names[0]}, got {pb.device}")
    return pa, pb


def _intersections(pa: torch.Tensor, pb: torch.Tensor, matched: bool) -> torch.Tensor:
    return choose("mask_intersection", _BACKENDS, pa, pb, matched).run(pa, pb, matched)


def mask_intersection(a: torch.Tensor, b: torch.Tensor, *, matched: bool = False) -> torch.Tensor:
    """|a_i ∩ b_j| as int64: (N, M) pairwise, or (N,) for matched pairs (a_i, b_i)."""
    return _intersections(*_pair(a, b, ("a", "b"), matched), matched)


def mask_area(masks: torch.Tensor) -> torch.Tensor:
    """|m_i| as int64, shape (N,)."""
    packed = as_packed("masks", masks)
    return _intersections(packed, packed, True)


def mask_iou(
    a: torch.Tensor, b: torch.Tensor, *, matched: bool = False, coco: bool = False, iscrowd=None
) -> torch.Tensor:
    """IoU = |a ∩ b| / |a ∪ b|: (N, M) pairwise or (N,) matched, float32 (float64 with coco=True).

    Two empty masks have IoU 1.0. With coco=True the result equals pycocotools
    `maskUtils.iou(a_rles, b_rles, iscrowd)`: 0.0 when the intersection is empty, and
    |a ∩ b| / |a| for b_j marked iscrowd (a sequence or tensor of M booleans)."""
    pa, pb = _pair(a, b, ("a", "b"), matched)
    inter = _intersections(pa, pb, matched).double()
    area_a, area_b = mask_area(pa).double(), mask_area(pb).double()
    if not matched:
        area_a, area_b = area_a[:, None], area_b[None, :]
    union = area_a + area_b - inter
    if coco:
        crowd = _iscrowd(iscrowd, pb.shape[0], pb.device)
        if not matched:
            crowd = crowd[None, :]
        denom = torch.where(crowd, area_a.expand_as(inter), union)
        return torch.where(inter > 0, inter / denom.clamp(min=1), torch.zeros_like(inter))
    if iscrowd is not None:
        raise ValueError("iscrowd is only used with coco=True")
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter)).float()


def mask_iop(pred: torch.Tensor, gt: torch.Tensor, *, matched: bool = False) -> torch.Tensor:
    """IoP = |pred ∩ gt| / |pred| (LLM-Seg's intersection over prediction), float32;
    (N, M) pairwise or (N,) matched. An empty prediction has IoP 0.0."""
    pp, pg = _pair(pred, gt, ("pred", "gt"), matched)
    inter = _intersections(pp, pg, matched).double()
    area = mask_area(pp).double()
    if not matched:
        area = area[:, None]
    return torch.where(area > 0, inter / area.clamp(min=1), torch.zeros_like(inter)).float()


def mask_nms(
    masks: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """Greedy mask NMS: visit masks by decreasing score (ties: lower index first), keep a mask
    unless its IoU with an already kept mask of the same group is > iou_threshold. `groups`
    (K,) batches several images (masks only suppress masks of their own group). Returns the
    kept indices (int64) in the order they were kept, as torchvision.ops.nms does for boxes."""
    packed = as_packed("masks", masks)
    k = packed.shape[0]
    check_tensor("scores", scores, ndim=1, floating=True)
    if scores.shape[0] != k:
        raise ValueError(f"scores must have shape ({k},) to match masks, got {tuple(scores.shape)}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores must not contain NaN")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold must be a float, got {type(iou_threshold).__name__}")
    if groups is None:
        groups = torch.zeros(k, dtype=torch.int64, device=packed.device)
    else:
        check_tensor("groups", groups, ndim=1)
        if groups.shape[0] != k or groups.is_floating_point():
            raise ValueError(
                f"groups must be an integer tensor of shape ({k},), got {groups.dtype} {tuple(groups.shape)}"
            )
    order = torch.argsort(scores.detach().cpu(), descending=True, stable=True)
    groups_sorted = groups.detach().cpu()[order]
    kept = []
    for g in torch.unique(groups_sorted).tolist():
        members = order[groups_sorted == g]
        idx = members.to(packed.device)
        iou = mask_iou(packed[idx], packed[idx]).cpu().numpy()
        kept += [(int(members[i]), i) for i in _greedy(iou, iou_threshold)]
    # keep the global decreasing-score order across groups
    rank = {int(m): r for r, m in enumerate(order.tolist())}
    kept.sort(key=lambda t: rank[t[0]])
    return torch.tensor([m for m, _ in kept], dtype=torch.int64, device=masks.device)


def _greedy(iou: np.ndarray, threshold: float) -> list:
    suppressed = np.zeros(iou.shape[0], dtype=bool)
    keep = []
    for i in range(iou.shape[0]):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > threshold
    return keep


def _iscrowd(iscrowd, m, device):
    if iscrowd is None:
        return torch.zeros(m, dtype=torch.bool, device=device)
    crowd = torch.as_tensor(iscrowd, device=device).bool().flatten()
    if crowd.shape[0] != m:
        raise ValueError(f"iscrowd must have {m} entries (one per b mask), got {crowd.shape[0]}")
    return crowd


def _compiled(pa, pb, matched):
    return torch.ops.segfast.mask_intersections(pa, pb, matched)


def int_mm_intersections(pa: torch.Tensor, pb: torch.Tensor, matched: bool = False) -> torch.Tensor:
    """Pairwise |a_i ∩ b_j| as int64 through torch._int_mm on unpacked 0/1 int8 masks, a chunk of
    pixel columns at a time (int32 sums of at most 2^31 - 1 pixels per chunk: exact). The
    operands are padded to _int_mm's CUDA shape rules (more than 16 rows of a, columns of b a
    multiple of 8) with empty masks."""
    n, m = pa.shape[0], pb.shape[0]
    fa = F.pad(pa.reshape(n, -1), (0, 0, 0, max(17, n) - n))
    fb = F.pad(pb.reshape(m, -1), (0, 0, 0, -m % 8))
    row_bytes = fa.shape[1]  # a multiple of 8: whole 64-pixel words
    step = 8 * max(1, min(INT_MM_CHUNK_BYTES // (64 * (fa.shape[0] + fb.shape[0])), (2**31 - 1) // 64))
    out = torch.zeros(n, m, dtype=torch.int64, device=pa.device)
    for c0 in range(0, row_bytes, step):
        cols = min(step, row_bytes - c0)
        da = unpack_masks(fa[:, c0 : c0 + cols].contiguous(), 8 * cols).view(torch.int8)
        db = unpack_masks(fb[:, c0 : c0 + cols].contiguous(), 8 * cols).view(torch.int8)
        out += torch._int_mm(da, db.t())[:n, :m]
    return out


def _int_mm_unsupported(pa, pb, matched):
    if matched:
        return "matched pairs are not a matrix product"
    if pa.device.type != "cuda":
        return "off the GPU the popcount kernels are faster"
    if torch.cuda.get_device_capability(pa.device) < (7, 5):
        return "the GPU has no int8 tensor cores"
    n, m = pa.shape[0], pb.shape[0]
    if n * m < INT_MM_MIN_PAIRS * (n + m):
        return f"{n} x {m} pairs are too few to repay unpacking (popcounts are faster)"
    return None


_BACKENDS = [
    Backend("int_mm", _int_mm_unsupported, int_mm_intersections),
    Backend("cuda", compiled_on("cuda"), _compiled),
    Backend("cpu", compiled_on("cpu"), _compiled),
    Backend("reference", lambda *a: None, _reference.mask_intersections),
]

if _extension._C is not None:

    @torch.library.register_fake("segfast::mask_intersections")
    def _(a, b, matched):
        shape = (a.shape[0],) if matched else (a.shape[0], b.shape[0])
        return a.new_empty(shape, dtype=torch.int64)
