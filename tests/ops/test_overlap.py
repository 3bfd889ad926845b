import numpy as np
import pytest
import torch

import segfast
from segfast.ops import (
    _reference,
    mask_area,
    mask_intersection,
    mask_iop,
    mask_iou,
    mask_nms,
    overlap,
    pack_masks,
    unpack_masks,
)
from tests.allocations import Allocations

HAS_EXT = segfast.build_info()["extension"]
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="segfast._C not built")


def random_masks(n, h, w, gen, density=None):
    """Random masks with the edge cases mixed in: empty, full, one pixel."""
    d = torch.rand(n, 1, 1, generator=gen) if density is None else torch.full((n, 1, 1), density)
    masks = torch.rand(n, h, w, generator=gen) < d
    if n >= 4:
        masks[0] = False
        masks[1] = True
        masks[2] = False
        masks[2, int(torch.randint(h, (1,), generator=gen)), int(torch.randint(w, (1,), generator=gen))] = True
    return masks[torch.randperm(n, generator=gen)]


def plain_counts(a, b):
    """The plainest possible pairwise intersection: a Python loop over pairs."""
    return torch.tensor([[int((x & y).sum()) for y in b] for x in a], dtype=torch.int64).reshape(len(a), len(b))


SIZES = [(1, 1), (3, 7), (5, 63), (4, 64), (6, 65), (9, 130), (17, 201)]


@needs_ext
@pytest.mark.parametrize("h, w", SIZES)
def test_pack_unpack_compiled_matches_reference(gen, h, w):
    masks = random_masks(6, h, w, gen)
    packed = pack_masks(masks)
    assert torch.equal(packed, _reference.pack_masks(masks))
    assert torch.equal(unpack_masks(packed, w), masks)
    strided = masks.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(pack_masks(strided), packed)
    assert torch.equal(pack_masks(masks[None]), packed[None])  # any leading dims


@needs_ext
@pytest.mark.parametrize("h, w", SIZES)
def test_intersections_match_reference_and_plain_loop(gen, h, w):
    n, m = int(torch.randint(1, 23, (1,), generator=gen)), int(torch.randint(1, 23, (1,), generator=gen))
    a, b = random_masks(n, h, w, gen), random_masks(m, h, w, gen)
    got = mask_intersection(a, b)
    assert got.dtype == torch.int64 and got.shape == (n, m)
    assert torch.equal(got, plain_counts(a, b))
    assert torch.equal(got, _reference.mask_intersections(pack_masks(a), pack_masks(b), False))
    assert torch.equal(mask_intersection(pack_masks(a), b), got)  # packed and dense mix
    c = random_masks(n, h, w, gen)
    assert torch.equal(mask_intersection(a, c, matched=True), (a & c).flatten(1).sum(1))
    assert torch.equal(mask_area(a), a.flatten(1).sum(1))


@needs_ext
def test_large_pairwise_blocks(gen):
    # crosses the CPU kernel's 16-row blocks, 4x4 register blocks and 512-word chunks
    a, b = random_masks(37, 70, 130, gen), random_masks(29, 70, 130, gen)
    assert torch.equal(mask_intersection(a, b), torch.einsum("nhw,mhw->nm", a.long(), b.long()))


def misaligned(t: torch.Tensor, offset: int = 3) -> torch.Tensor:
    """The same values as `t`, in a contiguous view whose data starts `offset` bytes into a buffer."""
    buf = torch.zeros(t.numel() + offset, dtype=t.dtype, device=t.device)
    view = buf[offset:].view(t.shape)
    view.copy_(t)
    assert view.is_contiguous() and view.data_ptr() % 8 == offset
    return view


@needs_ext
def test_misaligned_packed_views(gen):
    """Packed masks are read as 64-bit words: the public ops copy a view at an odd byte offset
    (on a GPU it would be a misaligned-address fault), the raw ops refuse it by name."""
    a, b = random_masks(5, 6, 70, gen), random_masks(4, 6, 70, gen)
    pa, pb = misaligned(pack_masks(a)), misaligned(pack_masks(b), 5)
    assert torch.equal(mask_intersection(pa, pb), plain_counts(a, b))
    assert torch.equal(mask_area(pa), a.flatten(1).sum(1))
    assert torch.equal(unpack_masks(pa, 70), a)
    for call in (
        lambda: torch.ops.segfast.mask_intersections(pa, pack_masks(b), False),
        lambda: torch.ops.segfast.unpack_masks(pa, 70),
    ):
        with pytest.raises(RuntimeError, match="8-byte boundary"):
            call()


def test_iou_iop_definitions():
    empty = torch.zeros(1, 2, 3, dtype=torch.bool)
    full = torch.ones(1, 2, 3, dtype=torch.bool)
    half = torch.tensor([[[1, 1, 1], [0, 0, 0]]], dtype=torch.bool)
    assert mask_iou(empty, empty).item() == 1.0
    assert mask_iou(empty, full).item() == 0.0
    assert mask_iou(half, full).item() == 0.5
    assert mask_iop(half, full).item() == 1.0
    assert mask_iop(full, half).item() == 0.5
    assert mask_iop(empty, full).item() == 0.0
    assert mask_iop(empty, empty).item() == 0.0
    assert mask_iou(empty, empty, coco=True).item() == 0.0
    assert mask_iou(half, full, coco=True, iscrowd=[1]).item() == 1.0


@needs_ext
def test_iou_iop_match_float64_formula(gen):
    a, b = random_masks(11, 19, 33, gen), random_masks(8, 19, 33, gen)
    inter = plain_counts(a, b).double()
    area_a, area_b = a.flatten(1).sum(1).double(), b.flatten(1).sum(1).double()
    union = area_a[:, None] + area_b[None] - inter
    expect = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).float()
    assert torch.equal(mask_iou(a, b), expect)
    iop = torch.where(area_a[:, None] > 0, inter / area_a[:, None].clamp(min=1), torch.zeros_like(inter)).float()
    assert torch.equal(mask_iop(a, b), iop)
    c = random_masks(11, 19, 33, gen)
    assert torch.equal(mask_iou(a, c, matched=True), mask_iou(a, c).diagonal())
    assert torch.equal(mask_iop(a, c, matched=True), mask_iop(a, c).diagonal())


@pytest.mark.parametrize("crowd", [False, True])
def test_coco_mode_equals_pycocotools(gen, crowd):
    mask_utils = pytest.importorskip("pycocotools.mask")
    for h, w in [(1, 1), (13, 29), (64, 64), (37, 101)]:
        a, b = random_masks(9, h, w, gen), random_masks(7, h, w, gen)
        iscrowd = (torch.rand(7, generator=gen) < 0.5).tolist() if crowd else [False] * 7
        enc = lambda m: mask_utils.encode(np.asfortranarray(m.permute(1, 2, 0).numpy().astype(np.uint8)))  # noqa: E731
        theirs = mask_utils.iou(enc(a), enc(b), [int(c) for c in iscrowd])
        ours = mask_iou(a, b, coco=True, iscrowd=iscrowd)
        assert ours.dtype == torch.float64
        np.testing.assert_array_equal(ours.numpy(), theirs)


def reference_nms(masks, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    keep = []
    for i in order:
        if all(float(_iou_pair(masks[i], masks[k])) <= threshold for k in keep):
            keep.append(i)
    return keep


def _iou_pair(x, y):
    inter, union = int((x & y).sum()), int((x | y).sum())
    return 1.0 if union == 0 else inter / union


@needs_ext
def test_nms_equals_plain_greedy_loop(gen):
    for _ in range(5):
        base = random_masks(12, 21, 35, gen, density=0.3)
        masks = torch.cat([base, base[:6] | (torch.rand(6, 21, 35, generator=gen) < 0.05)])
        scores = torch.randint(0, 6, (18,), generator=gen).float()  # many ties
        for thr in (0.3, 0.5, 0.9):
            assert mask_nms(masks, scores, thr).tolist() == reference_nms(masks, scores, thr)


@needs_ext
def test_nms_batched_only_within_groups(gen):
    masks = random_masks(10, 15, 17, gen, density=0.5)
    masks = torch.cat([masks, masks])
    scores = torch.rand(20, generator=gen)
    groups = torch.cat([torch.zeros(10), torch.ones(10)]).long()
    kept = mask_nms(masks, scores, 0.5, groups=groups).tolist()
    for g in (0, 1):
        idx = [i for i in range(20) if groups[i] == g]
        expect = [idx[k] for k in reference_nms(masks[idx], scores[idx], 0.5)]
        assert [k for k in kept if groups[k] == g] == expect
    assert [float(scores[k]) for k in kept] == sorted((float(scores[k]) for k in kept), reverse=True)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: mask_iou(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4, dtype=torch.bool)), TypeError, "a"),
        (
            lambda: mask_iou(torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2, 3, 5, dtype=torch.bool)),
            ValueError,
            "same mask size",
        ),
        (
            lambda: mask_iou(torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2, 4, 8, dtype=torch.uint8)),
            ValueError,
            "same mask size",
        ),
        (
            lambda: mask_iou(torch.zeros(3, 4, dtype=torch.bool), torch.zeros(2, 3, 4, dtype=torch.bool)),
            ValueError,
            "a",
        ),
        (
            lambda: mask_iop(torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2, 3, 5, dtype=torch.uint8)),
            ValueError,
            "gt",
        ),
        (
            lambda: mask_iou(
                torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(3, 3, 4, dtype=torch.bool), matched=True
            ),
            ValueError,
            "matched",
        ),
        (
            lambda: mask_iou(
                torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2, 3, 4, dtype=torch.bool), iscrowd=[0, 1]
            ),
            ValueError,
            "iscrowd",
        ),
        (
            lambda: mask_iou(
                torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2, 3, 4, dtype=torch.bool), coco=True, iscrowd=[0]
            ),
            ValueError,
            "iscrowd",
        ),
        (lambda: mask_nms(torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(3), 0.5), ValueError, "scores"),
        (
            lambda: mask_nms(torch.zeros(2, 3, 4, dtype=torch.bool), torch.tensor([0.1, float("nan")]), 0.5),
            ValueError,
            "NaN",
        ),
        (lambda: mask_nms(torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2), "0.5"), TypeError, "iou_threshold"),
        (lambda: unpack_masks(torch.zeros(2, 3, 8, dtype=torch.uint8), 65), ValueError, "packed"),
        (lambda: pack_masks(torch.zeros(4, dtype=torch.bool)), ValueError, "masks"),
    ],
)
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_empty_inputs():
    none = torch.zeros(0, 5, 9, dtype=torch.bool)
    some = torch.ones(3, 5, 9, dtype=torch.bool)
    assert mask_iou(none, some).shape == (0, 3)
    assert mask_iou(some, none).shape == (3, 0)
    assert mask_area(none).shape == (0,)
    assert mask_nms(none, torch.zeros(0), 0.5).shape == (0,)


@pytest.mark.parametrize("h, w", [(1, 1), (5, 63), (6, 65), (17, 201), (3, 700)])
def test_int_mm_backend_matches_popcounts(gen, h, w, monkeypatch):
    """The tensor-core path (an int8 product of unpacked masks) is exact, in every chunk size and
    with operands padded to _int_mm's CUDA shape rules. It runs on the CPU too."""
    n, m = int(torch.randint(1, 40, (1,), generator=gen)), int(torch.randint(1, 40, (1,), generator=gen))
    a, b = random_masks(n, h, w, gen), random_masks(m, h, w, gen)
    want = plain_counts(a, b)
    assert torch.equal(overlap.int_mm_intersections(pack_masks(a), pack_masks(b)), want)
    monkeypatch.setattr(overlap, "INT_MM_CHUNK_BYTES", 1)  # one 64-pixel word per step
    assert torch.equal(overlap.int_mm_intersections(pack_masks(a), pack_masks(b)), want)


def test_int_mm_is_chosen_only_where_it_pays():
    pa = torch.zeros(1000, 4, 8, dtype=torch.uint8)
    assert "faster" in overlap._int_mm_unsupported(pa, pa, False)  # CPU: popcounts
    assert "matrix product" in overlap._int_mm_unsupported(pa, pa, True)


@pytest.mark.parametrize("matched", [False, True])
def test_reference_memory_is_bounded(gen, matched):
    """The reference unpacks a block at a time: a few MB of packed masks never become a dense
    float copy of the inputs (it was ~88x the packed size)."""
    a, b = random_masks(300, 64, 640, gen), random_masks(300 if matched else 290, 64, 640, gen)
    pa, pb = pack_masks(a), pack_masks(b)
    chunk = 1 << 20
    with Allocations() as seen:
        got = _reference.mask_intersections(pa, pb, matched, chunk_bytes=chunk)
    assert max(seen.float_sizes) * 4 <= chunk
    want = (a & b).flatten(1).sum(1) if matched else torch.einsum("nhw,mhw->nm", a.long(), b.long())
    assert torch.equal(got, want)


@needs_ext
@pytest.mark.parametrize("matched", [False, True])
def test_opcheck(gen, matched):
    a, b = pack_masks(random_masks(5, 7, 70, gen)), pack_masks(random_masks(5, 7, 70, gen))
    torch.library.opcheck(torch.ops.segfast.mask_intersections.default, (a, b, matched))
    torch.library.opcheck(torch.ops.segfast.pack_masks.default, (random_masks(3, 4, 77, gen),))
    torch.library.opcheck(torch.ops.segfast.unpack_masks.default, (a, 70))


@pytest.mark.gpu
def test_cuda_int_mm_split_k_and_alignment(gen):
    """Both CUDA paths against the CPU: the int8 product (chosen for 300 x 200 masks), split-K
    popcounts for thin problems (100 x 4 masks of 1024^2), and misaligned packed views."""
    a, b = random_masks(300, 64, 96, gen), random_masks(200, 64, 96, gen)
    pa, pb = pack_masks(a).cuda(), pack_masks(b).cuda()
    assert overlap._int_mm_unsupported(pa, pb, False) is None
    want = mask_intersection(a, b)
    assert torch.equal(mask_intersection(pa, pb).cpu(), want)
    assert torch.equal(overlap.int_mm_intersections(pa, pb).cpu(), want)
    assert torch.equal(torch.ops.segfast.mask_intersections(pa, pb, False).cpu(), want)
    thin_a, thin_b = random_masks(100, 1024, 1024, gen), random_masks(4, 1024, 1024, gen)
    got = mask_intersection(thin_a.cuda(), thin_b.cuda())
    assert torch.equal(got.cpu(), mask_intersection(thin_a, thin_b))
    ma, mb = misaligned(pack_masks(a[:9]).cuda()), misaligned(pack_masks(b[:7]).cuda(), 1)
    assert torch.equal(mask_intersection(ma, mb).cpu(), want[:9, :7])
    assert torch.equal(unpack_masks(ma, 96).cpu(), a[:9])
    with pytest.raises(RuntimeError, match="8-byte boundary"):
        torch.ops.segfast.unpack_masks(ma, 96)


@pytest.mark.gpu
def test_cuda_overlap_matches_cpu(gen):
    for h, w in SIZES + [(256, 256)]:
        a, b = random_masks(70, h, w, gen), random_masks(67, h, w, gen)
        pa, pb = pack_masks(a.cuda()), pack_masks(b.cuda())
        assert torch.equal(pa.cpu(), pack_masks(a))
        assert torch.equal(unpack_masks(pa, w).cpu(), a)
        assert torch.equal(mask_intersection(pa, pb).cpu(), mask_intersection(a, b))
        assert torch.equal(
            mask_intersection(pa[:67], pb, matched=True).cpu(), mask_intersection(a[:67], b, matched=True)
        )
        assert torch.equal(mask_iou(a.cuda(), b.cuda()).cpu(), mask_iou(a, b))
    torch.library.opcheck(torch.ops.segfast.mask_intersections.default, (pa, pb, False))
