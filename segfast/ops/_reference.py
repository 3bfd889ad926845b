"""Plain-PyTorch references of every segfast op: written for clarity, used as the oracle in
tests and as the fallback when no compiled backend fits. They run on any device."""

import math

import torch
import torch.nn.functional as F

# ---- packed masks ------------------------------------------------------------------------
# Bits along the width, little bit order (pixel x is bit x % 8 of byte x // 8, as
# numpy.packbits(..., bitorder="little")); each row is padded with zero bits to a whole number
# of 64-bit words, so row r of mask m starts at byte (m * H + r) * 8 * ceil(W / 64).


def packed_row_bytes(width: int) -> int:
    return 8 * math.ceil(width / 64)


def pack_masks(masks: torch.Tensor) -> torch.Tensor:
    """(..., H, W) bool -> (..., H, packed_row_bytes(W)) uint8."""
    width = masks.shape[-1]
    pad = packed_row_bytes(width) * 8 - width
    bits = torch.nn.functional.pad(masks.to(torch.uint8), (0, pad))
    bits = bits.reshape(*bits.shape[:-1], packed_row_bytes(width), 8)
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8, device=masks.device)
    return (bits * weights).sum(-1, dtype=torch.uint8)


def unpack_masks(packed: torch.Tensor, width: int) -> torch.Tensor:
    """(..., H, packed_row_bytes(W)) uint8 -> (..., H, W) bool."""
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(*packed.shape[:-1], -1)[..., :width].bool()


# ---- mask overlap -------------------------------------------------------------------------


REFERENCE_CHUNK_BYTES = 64 << 20  # bound on the unpacked copies mask_intersections makes at a time


def mask_intersections(a: torch.Tensor, b: torch.Tensor, matched: bool, chunk_bytes: int | None = None) -> torch.Tensor:
    """|a_i ∩ b_j| (pairwise, (N, M)) or |a_i ∩ b_i| (matched, (N,)) as int64, from packed masks
    (N, H, 8k) and (M, H, 8k); padding bits are zero so the padded width counts the same.

    Blocks of at most 256 masks of each operand and a slice of their bytes are unpacked at a
    time, so memory stays near `chunk_bytes` whatever the input size; each block's counts are a
    float32 product of 0/1 masks, exact because a slice has fewer than 2^24 pixels."""
    chunk_bytes = REFERENCE_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    n, m = a.shape[0], b.shape[0]
    fa, fb = a.reshape(n, -1), b.reshape(m, -1)
    rows = 256
    # a slice of c bytes is 8c pixels of 1 (bool) + 4 (float32) bytes for each of 2 * rows masks
    cols = max(1, min(fa.shape[1], chunk_bytes // (80 * rows), 2**21 - 1))
    out = torch.zeros((n,) if matched else (n, m), dtype=torch.int64, device=a.device)
    for c0 in range(0, fa.shape[1], cols):
        for i0 in range(0, n, rows):
            da = unpack_masks(fa[i0 : i0 + rows, c0 : c0 + cols], 8 * cols).float()
            if matched:
                db = unpack_masks(fb[i0 : i0 + rows, c0 : c0 + cols], 8 * cols).float()
                out[i0 : i0 + rows] += (da * db).sum(1).long()
                continue
            for j0 in range(0, m, rows):
                db = unpack_masks(fb[j0 : j0 + rows, c0 : c0 + cols], 8 * cols).float()
                out[i0 : i0 + rows, j0 : j0 + rows] += (da @ db.T).long()
    return out


# ---- mask pooling ---------------------------------------------------------------------------


def area_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64: output cell i covers [i s, (i + 1) s) with s = n_in / n_out; entry
    (i, y) is the length of that interval inside pixel [y, y + 1), divided by s (area resampling;
    rows sum to 1)."""
    edges = torch.arange(n_out + 1, dtype=torch.float64) * (n_in / n_out)
    y = torch.arange(n_in, dtype=torch.float64)
    overlap = torch.minimum(y + 1, edges[1:, None]) - torch.maximum(y, edges[:-1, None])
    return overlap.clamp(min=0) / (n_in / n_out)


def resize_matrix(n_in: int, n_out: int, antialias: bool) -> torch.Tensor:
    """(n_out, n_in) float64: F.interpolate(mode="bilinear", align_corners=False, antialias=...)
    along one axis, read off by resizing an identity (bilinear resizing is separable)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=antialias)[0, 0]


def mask_pool(
    features: torch.Tensor, masks: torch.Tensor, weights: str = "area", eps: float = 1e-8, grid=None
) -> torch.Tensor:
    """Explicit resize + einsum: (B, C, h, w) features, (B, K, H, W) float masks -> (B, K, C).

    area: exact fractional cell coverage. bilinear: masks resized to (h, w) by antialiased
    bilinear interpolation. bilinear with grid=(gh, gw): LLM-Seg's preprocessing — masks resized
    to the grid (antialiased bilinear), features upsampled to it (bilinear), pooled there."""
    b, k, hh, ww = masks.shape
    h, w = features.shape[-2:]
    m = masks.to(torch.float64)
    f = features.to(torch.float64)
    if weights == "area":
        wts = torch.einsum("ih,bkhw,jw->bkij", area_matrix(hh, h).to(m.device), m, area_matrix(ww, w).to(m.device))
    else:
        size = (h, w) if grid is None else tuple(grid)
        wts = F.interpolate(
            m.reshape(b * k, 1, hh, ww), size=size, mode="bilinear", align_corners=False, antialias=True
        ).reshape(b, k, *size)
        if grid is not None:
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
    pooled = torch.einsum("bkhw,bchw->bkc", wts, f) / (wts.sum((-2, -1))[..., None] + eps)
    return pooled.to(features.dtype)


# ---- masked attention -----------------------------------------------------------------------


def masked_attention(q, k, v, attend: torch.Tensor, scale: float, unmask_empty_rows: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale) v over allowed keys, in float64. attend: (B, 1 | H, Lq, Lk) bool,
    True = may attend. A row with no allowed key attends everywhere (unmask_empty_rows) or
    outputs 0."""
    qd, kd, vd = q.double(), k.double(), v.double()
    empty = ~attend.any(-1, keepdim=True)
    if unmask_empty_rows:
        attend = attend | empty
    scores = (qd @ kd.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~attend, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no key: all -inf -> 0
    return (probs @ vd).to(q.dtype)


# ---- OHEM cross-entropy -------------------------------------------------------------------


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh=None,
    min_kept: int = 100000,
    ignore_index: int = 255,
    reduction: str = "mean",
    avg_non_ignore: bool = False,
    class_weight=None,
    batch: int | None = None,
) -> torch.Tensor:
    """mmseg's OHEMPixelSampler + CrossEntropyLoss, in float64 and sorting like mmseg does.

    logits (N, C, *spatial), target (N, *spatial). budget = min_kept * batch (batch = N unless
    given). With thresh: p = softmax probability of the true class over non-ignored pixels;
    cutoff = sorted(p)[min(budget, count - 1)]; keep p < max(cutoff, thresh). Without: keep the
    budget pixels of highest (class-weighted) loss, ties broken by lower flat index. Kept pixels
    weigh 1; "mean" divides by all pixels, or by the non-ignored count (+ float32 eps) with
    avg_non_ignore. Differentiable in the logits.

    A non-ignored pixel with a non-finite logit is left out of the selection, and its loss and
    its logits' gradient are NaN; ignored pixels reach neither, whatever their logits."""
    x = logits.double()
    n_classes = x.shape[1]
    flat_t = target.reshape(-1).long()
    valid = flat_t != ignore_index
    # ignored rows zeroed: log_softmax's backward would spread their NaN (0 * NaN) otherwise
    flat_x = torch.where(valid[:, None], x.movedim(1, -1).reshape(-1, n_classes), 0.0)  # (pixels, C)
    finite = torch.isfinite(flat_x).all(1)
    safe_t = torch.where(valid, flat_t, torch.zeros_like(flat_t))
    weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float64, device=x.device)
    log_p = torch.log_softmax(flat_x, dim=1).gather(1, safe_t[:, None])[:, 0]
    nll = -log_p * (1.0 if weight is None else weight[safe_t])
    nll = torch.where(valid, nll, torch.zeros_like(nll))
    budget = min_kept * (target.shape[0] if batch is None else batch)
    with torch.no_grad():
        kept = torch.zeros_like(valid)
        idx = (valid & finite).nonzero()[:, 0]
        if thresh is not None:
            prob = log_p.exp()[idx]
            if prob.numel() > 0:
                cutoff = torch.sort(prob).values[min(budget, prob.numel() - 1)]
                kept[idx] = prob < max(float(cutoff), thresh)
        else:
            order = torch.sort(nll[idx], descending=True, stable=True).indices
            kept[idx[order[:budget]]] = True
    loss = torch.where(kept, nll, torch.zeros_like(nll))
    # + (sum of the row's logits) * (NaN if the row is non-finite else 0): NaN in the value and in
    # the gradient of exactly those rows (the factor is a constant, so 0 * grad elsewhere)
    poison = torch.where(valid & ~finite, float("nan"), 0.0).to(x.dtype)
    loss = loss + flat_x.sum(1) * poison
    if reduction == "none":
        return loss.reshape(target.shape)
    if reduction == "sum":
        return loss.sum()
    if avg_non_ignore:
        return loss.sum() / (int(valid.sum()) + torch.finfo(torch.float32).eps)
    return loss.sum() / flat_t.numel()


# ---- polygon rasterization ---------------------------------------------------------------


def _center_masks(vertices: torch.Tensor, lengths: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Even-odd test of every pixel centre against every edge: (n, V, 2) -> (n, H, W) bool.

    Edge i runs from vertex i to vertex (i + 1) % length, taken from its lower end so both
    directions of an edge give the same crossing. It crosses the row at yc when ya <= yc < yb;
    a pixel with centre cx counts the crossing xc when xc <= cx.
    """
    n, v, _ = vertices.shape
    dev = vertices.device
    idx = torch.arange(v, device=dev)
    valid = idx < lengths[:, None]  # (n, V)
    nxt = torch.where(idx + 1 < lengths[:, None], idx + 1, torch.zeros_like(idx))
    p0 = vertices
    p1 = torch.gather(vertices, 1, nxt[..., None].expand(n, v, 2))
    swap = (p0[..., 1] > p1[..., 1])[..., None]
    lo, hi = torch.where(swap, p1, p0), torch.where(swap, p0, p1)
    xa, ya, xb, yb = (t[..., None] for t in (lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]))
    yc = torch.arange(height, device=dev, dtype=torch.float64) + 0.5  # (H,)
    crosses = valid[..., None] & (ya <= yc) & (yc < yb)  # (n, V, H)
    xc = xa + (yc - ya) * (xb - xa) / (yb - ya)  # (n, V, H)
    cx = torch.arange(width, device=dev, dtype=torch.float64) + 0.5  # (W,)
    left_of_pixel = crosses[..., None] & (xc[..., None] <= cx)  # (n, V, H, W)
    return left_of_pixel.sum(1) % 2 == 1


def _coco_mask(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """pycocotools maskApi.c rleFrPoly, step by step: (L, 2) float64 -> (H, W) bool."""
    dev = xy.device
    gx = torch.trunc(5.0 * xy[:, 0] + 0.5).long().tolist()  # C's (int) truncates toward zero
    gy = torch.trunc(5.0 * xy[:, 1] + 0.5).long().tolist()
    k = len(gx)
    us, vs = [], []
    # trace every edge densely on the 5x grid
    for j in range(k):
        xs, ys, xe, ye = gx[j], gy[j], gx[(j + 1) % k], gy[(j + 1) % k]
        dx, dy = abs(xe - xs), abs(ys - ye)
        flip = (dx >= dy and xs > xe) or (dx < dy and ys > ye)
        if flip:
            xs, xe, ys, ye = xe, xs, ye, ys
        if dx >= dy:
            d = torch.arange(dx + 1, device=dev)
            t = dx - d if flip else d
            s = (ye - ys) / dx if dx else 0.0  # a repeated vertex: one point, no crossing
            us.append(t + xs)
            vs.append(torch.trunc((ys + s * t.double()) + 0.5).long())
        else:
            d = torch.arange(dy + 1, device=dev)
            t = dy - d if flip else d
            s = (xe - xs) / dy
            vs.append(t + ys)
            us.append(torch.trunc((xs + s * t.double()) + 0.5).long())
    u, v = torch.cat(us), torch.cat(vs)
    # keep the points where the trace crosses a pixel-centre column
    changed = u[1:] != u[:-1]
    xd = torch.where(u[1:] < u[:-1], u[1:], u[1:] - 1).double()
    xd = (xd + 0.5) / 5.0 - 0.5
    keep = changed & (torch.floor(xd) == xd) & (xd >= 0) & (xd <= width - 1)
    yd = torch.minimum(v[1:], v[:-1]).double()
    yd = torch.ceil(((yd + 0.5) / 5.0 - 0.5).clamp(0, height))
    cols, rows = xd[keep].long(), yd[keep].long()
    # each crossing toggles its column from its row down; parity gives coverage
    toggles = torch.zeros(height + 1, width, dtype=torch.int64, device=dev)
    toggles.index_put_((rows, cols), torch.ones_like(rows), accumulate=True)
    return (toggles.cumsum(0)[:height] % 2) == 1


def rasterize_polygons(
    vertices: torch.Tensor,
    lengths: torch.Tensor,
    groups: torch.Tensor,
    num_masks: int,
    height: int,
    width: int,
    rule: str = "center",
    packed: bool = False,
) -> torch.Tensor:
    """Masks (num_masks, H, W) bool, or packed uint8; mask m is the union of the polygons i with
    groups[i] == m. vertices (N, V, 2) float64, lengths (N,) int64 >= 3, groups (N,) int64."""
    dev = vertices.device
    counts = torch.zeros(num_masks, height, width, dtype=torch.int32, device=dev)
    if rule == "center":
        # bound the (n, V, H, W) intermediate to ~64M elements per chunk
        step = max(1, (1 << 26) // max(1, vertices.shape[1] * height * width))
        for start in range(0, vertices.shape[0], step):
            sl = slice(start, start + step)
            masks = _center_masks(vertices[sl], lengths[sl], height, width)
            counts.index_add_(0, groups[sl], masks.to(torch.int32))
    else:
        for i in range(vertices.shape[0]):
            mask = _coco_mask(vertices[i, : int(lengths[i])], height, width)
            counts[int(groups[i])] += mask.to(torch.int32)
    masks = counts > 0
    return pack_masks(masks) if packed else masks


# ---- mask logits -> packed masks, stability, boxes (SAM everything mode) -----------------------


def binarize_logits(
    logits: torch.Tensor, hi: float, lo: float, mid: float, height: int, width: int, top: int, left: int
):
    """segment-anything's calculate_stability_score, `> threshold`, batched_mask_to_box and
    uncrop_masks, written plainly: (packed, counts (N, 3) int32 [> hi, > lo, > mid], boxes)."""
    counts = torch.stack([(logits > t).sum((-1, -2), dtype=torch.int32) for t in (hi, lo, mid)], dim=1)
    n, h, w = logits.shape
    masks = F.pad(logits > mid, (left, width - w - left, top, height - h - top))
    rows, cols = masks.any(-1), masks.any(-2)
    boxes = torch.zeros(n, 4, dtype=torch.int64, device=logits.device)
    for i in range(n):
        ys, xs = rows[i].nonzero()[:, 0], cols[i].nonzero()[:, 0]
        if len(ys):
            boxes[i] = torch.stack([xs[0], ys[0], xs[-1], ys[-1]])
    return pack_masks(masks), counts, boxes


def rle_counts(mask: torch.Tensor) -> list:
    """COCO uncompressed RLE counts of one dense (H, W) mask: runs down the columns, zeros first."""
    flat = mask.t().reshape(-1).to(torch.int8)
    if flat.numel() == 0:
        return [0]
    change = (flat[1:] != flat[:-1]).nonzero()[:, 0] + 1
    edges = [0] + change.tolist() + [flat.numel()]
    counts = [b - a for a, b in zip(edges[:-1], edges[1:])]
    return ([0] if flat[0] else []) + counts
