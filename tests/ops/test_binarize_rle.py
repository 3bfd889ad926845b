"""binarize_logits and rle_encode against segment-anything's own helpers and pycocotools. Those
peers are optional (the GPU machine may lack them): only the tests that compare with them skip
without them, the comparisons with segfast's references always run."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segfast.ops import _reference, binarize_logits, rle_encode


@pytest.fixture
def amg():
    return pytest.importorskip("segment_anything.utils.amg")


@pytest.fixture
def mask_utils():
    return pytest.importorskip("pycocotools.mask")


def _logits(gen, n, h, w):
    x = torch.randn(n, h, w, generator=gen) * 3
    if x.numel() == 0:
        return x
    # Values exactly at the three thresholds, an empty map and a full one.
    x.view(-1)[torch.randint(0, x.numel(), (x.numel() // 10,), generator=gen)] = 1.0
    x.view(-1)[torch.randint(0, x.numel(), (x.numel() // 10,), generator=gen)] = -1.0
    x.view(-1)[torch.randint(0, x.numel(), (x.numel() // 10,), generator=gen)] = 0.0
    if n > 2:
        x[0], x[1] = -5.0, 5.0
    return x


@pytest.mark.parametrize(
    "shape,canvas,origin",
    [
        ((7, 37, 70), None, (0, 0)),
        ((5, 64, 64), (100, 130), (36, 0)),
        ((4, 33, 129), (40, 200), (3, 71)),
        ((2, 1, 1), (1, 65), (0, 64)),
        ((0, 5, 5), None, (0, 0)),
    ],
)
def test_binarize_matches_segment_anything(gen, shape, canvas, origin, amg):
    x = _logits(gen, *shape)
    height, width = canvas or shape[1:]
    out = binarize_logits(x, 0.0, stability_offset=1.0, canvas=canvas, origin=origin)
    top, left = origin
    masks = F.pad(x > 0.0, (left, width - shape[2] - left, top, height - shape[1] - top))
    assert torch.equal(out.packed, _reference.pack_masks(masks))
    assert torch.equal(out.area, masks.sum((1, 2)))
    assert torch.equal(out.boxes, amg.batched_mask_to_box(masks))
    stability = amg.calculate_stability_score(x, 0.0, 1.0)
    assert torch.equal(out.stability.isnan(), stability.isnan())
    assert torch.equal(out.stability.nan_to_num(-1), stability.nan_to_num(-1))


def test_binarize_threshold_and_reference(gen, amg):
    x = _logits(gen, 6, 40, 90)
    args = (x, 0.3 + 0.7, 0.3 - 0.7, 0.3, 50, 100, 4, 9)
    compiled = torch.ops.segfast.binarize_logits(*args)
    reference = _reference.binarize_logits(*args)
    for a, b in zip(compiled, reference):
        assert torch.equal(a, b)
    out = binarize_logits(x, 0.3, stability_offset=0.7, canvas=(50, 100), origin=(4, 9))
    assert torch.equal(out.stability.nan_to_num(-1), amg.calculate_stability_score(x, 0.3, 0.7).nan_to_num(-1))


@pytest.mark.parametrize("offset", [1.0, 0.0, -0.5, -3.0])
def test_binarize_counts_for_every_stability_offset(gen, offset):
    """segment-anything accepts any stability offset; with a negative one "> lo" can count zero
    pixels while "> hi" and "> mid" do not (the CUDA kernel once dropped such rows' counts, box
    and all). The kernels fold rows with one shared helper, checked here against the reference."""
    x = _logits(gen, 9, 33, 70)
    x[3] = 0.5 * offset  # every pixel between lo and hi when the offset is negative
    args = (x, 0.2 + offset, 0.2 - offset, 0.2, 40, 100, 4, 9)
    for a, b in zip(torch.ops.segfast.binarize_logits(*args), _reference.binarize_logits(*args)):
        assert torch.equal(a, b)


def test_binarize_bad_input():
    with pytest.raises(TypeError, match="logits"):
        binarize_logits(torch.zeros(2, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="logits"):
        binarize_logits(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="canvas"):
        binarize_logits(torch.zeros(1, 4, 4), canvas=(4, 4), origin=(1, 0))
    with pytest.raises(ValueError, match="origin"):
        binarize_logits(torch.zeros(1, 4, 4), canvas=(8, 8), origin=(-1, 0))


def _random_masks(gen, n, h, w):
    density = torch.rand(n, 1, 1, generator=gen)
    masks = torch.rand(n, h, w, generator=gen) < density
    if n > 2:
        masks[0], masks[1] = False, True
    return masks


@pytest.mark.parametrize("shape", [(6, 37, 70), (3, 64, 64), (4, 129, 65), (2, 1, 1), (3, 200, 3), (0, 4, 4)])
def test_rle_matches_segment_anything_and_pycocotools(gen, shape, amg, mask_utils):
    masks = _random_masks(gen, *shape)
    uncompressed = rle_encode(masks, compress=False)
    if shape[0]:
        assert uncompressed == amg.mask_to_rle_pytorch(masks)
    compressed = rle_encode(_reference.pack_masks(masks), shape[2])
    expected = [mask_utils.encode(np.asfortranarray(m.numpy().astype(np.uint8))) for m in masks]
    assert [r["counts"] for r in compressed] == [e["counts"].decode() for e in expected]
    assert all(r["size"] == list(shape[1:]) for r in compressed)
    for r, m in zip(compressed, masks):  # and back
        assert np.array_equal(mask_utils.decode(dict(r, counts=r["counts"].encode())), m.numpy())


def test_rle_reference_backend(gen, monkeypatch, amg, mask_utils):
    masks = _random_masks(gen, 4, 33, 70)
    monkeypatch.setenv("SEGFAST_BACKEND", "reference")
    assert rle_encode(masks, compress=False) == amg.mask_to_rle_pytorch(masks)
    assert rle_encode(masks) == [amg.coco_encode_rle(r) for r in amg.mask_to_rle_pytorch(masks)]


def test_rle_bad_input():
    with pytest.raises(ValueError, match="width"):
        rle_encode(torch.zeros(1, 4, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="width"):
        rle_encode(torch.zeros(1, 4, 8, dtype=torch.uint8), 65)
    with pytest.raises(ValueError, match="masks"):
        rle_encode(torch.zeros(4, 8, dtype=torch.bool))


@pytest.mark.gpu
@pytest.mark.parametrize("offset", [1.0, -0.5])
def test_cuda_binarize_every_offset(gen, offset):
    x = _logits(gen, 33, 64, 97)
    x[3] = 0.5 * offset
    args = (0.2 + offset, 0.2 - offset, 0.2, 80, 130, 9, 20)
    for a, b in zip(torch.ops.segfast.binarize_logits(x.cuda(), *args), torch.ops.segfast.binarize_logits(x, *args)):
        assert torch.equal(a.cpu(), b)


@pytest.mark.gpu
def test_cuda_binarize_matches_cpu(gen):
    for shape, canvas, origin in [((300, 256, 256), (300, 400), (20, 77)), ((64, 1000, 1500), None, (0, 0))]:
        x = _logits(gen, *shape)
        cpu = binarize_logits(x, 0.0, canvas=canvas, origin=origin)
        cuda = binarize_logits(x.cuda(), 0.0, canvas=canvas, origin=origin)
        for a, b in zip(cpu, cuda):
            assert torch.equal(a.nan_to_num(-1), b.cpu().nan_to_num(-1))
