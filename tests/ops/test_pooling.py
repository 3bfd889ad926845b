import pytest
import torch
import torch.nn.functional as F

import segfast
from segfast.nn import MaskPooling
from segfast.ops import _reference, mask_grid_weights, mask_pool, pack_masks
from segfast.ops.pooling import llmseg_pool_reference
from tests.allocations import Allocations

HAS_EXT = segfast.build_info()["extension"]
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="segfast._C not built")
CASES = [(37, 53, 8, 9), (64, 64, 8, 8), (100, 70, 13, 7), (16, 16, 16, 16), (65, 129, 5, 64)]
MODES = [("area", None), ("bilinear", None), ("bilinear", "grid")]


def random_masks(b, k, h, w, gen):
    masks = torch.rand(b, k, h, w, generator=gen) < torch.rand(b, k, 1, 1, generator=gen)
    masks[0, 0] = False  # empty
    if k > 1:
        masks[0, 1] = True  # full
    return masks


def grid_for(mode, h, w):
    return None if mode[1] is None else (2 * h + 1, 2 * w + 3)


@needs_ext
@pytest.mark.parametrize("hh, ww, h, w", CASES)
@pytest.mark.parametrize("mode", MODES)
def test_pool_matches_explicit_resize_and_einsum(gen, hh, ww, h, w, mode):
    weights, grid = mode[0], grid_for(mode, h, w)
    feats = torch.randn(2, 5, h, w, generator=gen, dtype=torch.float64)
    masks = random_masks(2, 6, hh, ww, gen)
    expect = _reference.mask_pool(feats, masks.double(), weights, 1e-8, grid)
    for given, kw in [(masks, {}), (pack_masks(masks), {"width": ww}), (masks.double(), {})]:
        got = mask_pool(feats, given, weights=weights, grid=grid, **kw)
        assert got.shape == (2, 6, 5) and got.dtype == torch.float64
        torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-7)
    assert torch.equal(mask_pool(feats, masks, weights=weights, grid=grid)[0, 0], torch.zeros(5, dtype=torch.float64))


@needs_ext
@pytest.mark.parametrize("mode", MODES)
def test_compiled_weights_over_random_size_pairs(gen, mode, monkeypatch):
    """Hundreds of random (in, out) size pairs per weight mode, compiled kernel against the dense
    reference, one-pixel masks included (a band of equal weights once popcounted past its end:
    width 10 -> 7 pooled pixel 6 of a one-pixel mask to 3.58 instead of 4.0)."""
    rand = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=gen))  # noqa: E731
    pairs = [(1, 10, 1, 7), (2, 1024, 1, 768), (2, 640, 1, 480)]
    pairs += [(hh, ww, rand(1, hh), rand(1, ww)) for hh, ww in ((rand(1, 12), rand(1, 300)) for _ in range(200))]
    for hh, ww, h, w in pairs:
        masks = torch.rand(1, 3, hh, ww, generator=gen) < 0.3
        masks[0, 0] = False
        masks[0, 0, rand(0, hh - 1), rand(0, ww - 1)] = True  # one pixel
        grid = None if mode[1] is None else (rand(h, 2 * h + 3), rand(w, 2 * w + 3))
        got = mask_grid_weights(masks, (h, w), weights=mode[0], grid=grid)
        monkeypatch.setenv("SEGFAST_BACKEND", "reference")
        want = mask_grid_weights(masks, (h, w), weights=mode[0], grid=grid)
        monkeypatch.delenv("SEGFAST_BACKEND")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda m: f"{(hh, ww, h, w, grid)}: {m}")


@needs_ext
def test_misaligned_packed_masks(gen):
    masks = random_masks(1, 4, 30, 70, gen)
    packed = pack_masks(masks)
    buf = torch.zeros(packed.numel() + 3, dtype=torch.uint8)
    view = buf[3:].view(packed.shape)
    view.copy_(packed)
    want = mask_grid_weights(masks, (6, 7))
    assert torch.equal(mask_grid_weights(view, (6, 7), width=70), want)


@needs_ext
def test_weights_equal_torch_resizes(gen):
    masks = random_masks(1, 4, 96, 64, gen)
    area = mask_grid_weights(masks, (12, 8))
    torch.testing.assert_close(area, F.avg_pool2d(masks.float(), (8, 8)), rtol=1e-6, atol=1e-7)
    bil = mask_grid_weights(masks, (12, 8), weights="bilinear")
    resized = F.interpolate(masks.float(), size=(12, 8), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(bil, resized, rtol=1e-5, atol=1e-6)


@needs_ext
def test_llmseg_helper_equals_grid_path(gen):
    feats = torch.randn(1, 7, 16, 16, generator=gen, dtype=torch.float64)
    masks = random_masks(1, 5, 128, 128, gen)
    torch.testing.assert_close(
        mask_pool(feats, masks, weights="bilinear", grid=(64, 64)),
        llmseg_pool_reference(feats, masks, (64, 64)),
        rtol=1e-6,
        atol=1e-7,
    )


@needs_ext
def test_ragged_k_by_padding(gen):
    feats = torch.randn(2, 4, 8, 8, generator=gen)
    a, b = random_masks(1, 3, 32, 32, gen), random_masks(1, 5, 32, 32, gen)
    padded = torch.zeros(2, 5, 32, 32, dtype=torch.bool)
    padded[0, :3], padded[1] = a[0], b[0]
    got = mask_pool(feats, padded)
    torch.testing.assert_close(got[0, :3], mask_pool(feats[:1], a)[0])
    torch.testing.assert_close(got[1], mask_pool(feats[1:], b)[0])
    assert torch.equal(got[0, 3:], torch.zeros(2, 4))


@needs_ext
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(gen, mode):
    masks = random_masks(1, 3, 20, 18, gen)
    feats = torch.randn(1, 2, 5, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    grid = grid_for(mode, 5, 6)
    assert torch.autograd.gradcheck(lambda f: mask_pool(f, masks, weights=mode[0], grid=grid), (feats,))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_within_twice_plain_pytorch(gen, dtype):
    feats = torch.randn(2, 16, 8, 8, generator=gen)
    masks = random_masks(2, 12, 64, 64, gen)
    exact = _reference.mask_pool(feats.double(), masks.double(), "area", 1e-8, None)
    w = F.avg_pool2d(masks.float(), 8)
    plain = torch.einsum("bkhw,bchw->bkc", w.to(dtype), feats.to(dtype)) / (w.sum((-2, -1))[..., None] + 1e-8).to(dtype)
    ours = mask_pool(feats.to(dtype), masks)
    assert ours.dtype == dtype
    nonempty = masks.flatten(2).any(-1)  # plain low-precision division gives NaN on empty masks
    plain_err = (plain.double() - exact)[nonempty].abs().max()
    ours_err = (ours.double() - exact)[nonempty].abs().max()
    assert ours_err <= 2 * plain_err, (ours_err, plain_err)
    assert torch.equal(ours[~nonempty].double(), torch.zeros_like(exact[~nonempty]))


@needs_ext
def test_no_dense_float_masks(gen):
    """The fused path never builds a float tensor of K x H x W elements."""
    k, hh, ww = 32, 256, 256
    masks = pack_masks(random_masks(1, k, hh, ww, gen))
    feats = torch.randn(1, 8, 16, 16, generator=gen)
    with Allocations() as seen:
        mask_pool(feats, masks, width=ww)
    assert max(seen.float_sizes) <= k * 16 * 16 * 8  # weights / outputs only, far below k * hh * ww


@needs_ext
def test_module_trains_a_projection(gen):
    pool = MaskPooling(projection=torch.nn.Conv2d(6, 4, 1))
    feats = torch.randn(2, 6, 8, 8, generator=gen)
    masks = random_masks(2, 3, 40, 40, gen)
    pool(feats, masks).square().sum().backward()
    assert pool.projection.weight.grad is not None and pool.projection.weight.grad.abs().sum() > 0


@needs_ext
def test_opcheck(gen):
    from segfast.ops.pooling import band_table

    masks = pack_masks(random_masks(1, 3, 30, 70, gen)[0])
    rs, rc, rw, _ = band_table(30, 6, "bilinear", None)
    cs, cc, cw, cu = band_table(70, 9, "bilinear", None)
    torch.library.opcheck(torch.ops.segfast.mask_grid_weights.default, (masks, 70, rs, rc, rw, cs, cc, cw, cu))


TINY = torch.zeros(1, 2, 8, 8)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: mask_pool(TINY.long(), torch.zeros(1, 1, 8, 8, dtype=torch.bool)), TypeError, "features"),
        (lambda: mask_pool(TINY, torch.zeros(1, 8, 8, dtype=torch.bool)), ValueError, "masks"),
        (lambda: mask_pool(TINY, torch.zeros(2, 1, 8, 8, dtype=torch.bool)), ValueError, "batch"),
        (lambda: mask_pool(TINY, torch.zeros(1, 1, 4, 8, dtype=torch.bool)), ValueError, "smaller"),
        (lambda: mask_pool(TINY, torch.zeros(1, 1, 8, 8, dtype=torch.uint8)), ValueError, "width"),
        (lambda: mask_pool(TINY, torch.zeros(1, 1, 8, 8, dtype=torch.int32)), TypeError, "masks"),
        (lambda: mask_pool(TINY, torch.zeros(1, 1, 8, 8, dtype=torch.bool), weights="max"), ValueError, "weights"),
        (lambda: mask_pool(TINY, torch.zeros(1, 1, 8, 8, dtype=torch.bool), grid=(16, 16)), ValueError, "grid"),
        (lambda: mask_pool(TINY, torch.zeros(1, 1, 8, 8, dtype=torch.bool), eps=-1.0), ValueError, "eps"),
    ],
)
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


@pytest.mark.gpu
@pytest.mark.parametrize("mode", MODES)
def test_cuda_matches_cpu(gen, mode):
    # (1000, 100, 2, 100): a 500-row band x 100 columns exceeds one shared-memory tile (chunked)
    for hh, ww, h, w in CASES + [(1024, 1024, 64, 64), (1000, 100, 2, 100), (10, 1000, 7, 700)]:
        feats = torch.randn(2, 5, h, w, generator=gen)
        masks = random_masks(2, 7, hh, ww, gen)
        grid = grid_for(mode, h, w)
        cpu = mask_pool(feats, masks, weights=mode[0], grid=grid)
        gpu = mask_pool(feats.cuda(), masks.cuda(), weights=mode[0], grid=grid)
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
        wc = mask_grid_weights(masks, (h, w), weights=mode[0], grid=grid)
        wg = mask_grid_weights(masks.cuda(), (h, w), weights=mode[0], grid=grid)
        torch.testing.assert_close(wg.cpu(), wc, rtol=1e-5, atol=1e-6)
