import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import segfast
from segfast.ops import _reference, pack_masks, rasterize_polygons, unpack_masks
from tests.polygons import random_polygons

HAS_EXT = segfast.build_info()["extension"]
needs_ext = pytest.mark.skipif(not HAS_EXT, reason="segfast._C not built")
KINDS = ["star", "convex", "scribble", "degenerate", "offimage", "grid"]


def reference(vertices, height, width, *, lengths=None, groups=None, num_masks=None, rule="center", packed=False):
    n, v, _ = vertices.shape
    lengths = torch.full((n,), v) if lengths is None else lengths
    if groups is None:
        groups, num_masks = torch.arange(n), n
    return _reference.rasterize_polygons(vertices.double(), lengths, groups, num_masks, height, width, rule, packed)


def random_size(gen, lo=1, hi=70):
    return tuple(int(x) for x in torch.randint(lo, hi, (2,), generator=gen))


# ---- the references themselves -------------------------------------------------------------


def test_center_reference_on_known_shapes():
    square = torch.tensor([[[1.0, 1.0], [4.0, 1.0], [4.0, 3.0], [1.0, 3.0]]])
    expect = torch.zeros(5, 6, dtype=torch.bool)
    expect[1:3, 1:4] = True  # pixel centres (x + .5, y + .5) inside [1, 4) x [1, 3)
    assert torch.equal(reference(square, 5, 6)[0], expect)
    # a centre exactly on the left/top edge is inside, on the right/bottom edge outside
    on_centres = torch.tensor([[[0.5, 0.5], [2.5, 0.5], [2.5, 2.5], [0.5, 2.5]]])
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[0:2, 0:2] = True
    assert torch.equal(reference(on_centres, 4, 4)[0], expect)


def test_references_agree_with_pycocotools(gen):
    mask_utils = pytest.importorskip("pycocotools.mask")
    for kind in KINDS:
        h, w = random_size(gen, 5, 40)
        polys = random_polygons(4, 7, h, w, gen, kind)
        ours = reference(polys, h, w, rule="coco").numpy()
        for i, p in enumerate(polys):
            theirs = mask_utils.decode(mask_utils.frPyObjects([p.flatten().tolist()], h, w))[..., 0]
            np.testing.assert_array_equal(ours[i], theirs.astype(bool), err_msg=f"{kind} polygon {i}")


def test_pack_roundtrip(gen):
    for h, w in [(3, 1), (5, 63), (2, 64), (4, 65), (7, 130)]:
        masks = torch.rand(3, h, w, generator=gen) < 0.5
        packed = pack_masks(masks)
        assert packed.shape == (3, h, 8 * ((w + 63) // 64)) and packed.dtype == torch.uint8
        np.testing.assert_array_equal(
            packed[..., : (w + 7) // 8].numpy(), np.packbits(masks.numpy(), axis=-1, bitorder="little")
        )
        assert not packed[..., (w + 7) // 8 :].any()  # padding is zero
        assert torch.equal(unpack_masks(packed, w), masks)


# ---- compiled backends against the references --------------------------------------------


@needs_ext
@pytest.mark.parametrize("rule", ["center", "coco"])
@pytest.mark.parametrize("kind", KINDS)
def test_cpu_matches_reference(gen, rule, kind):
    for _ in range(3):
        h, w = random_size(gen)
        v = int(torch.randint(3, 20, (1,), generator=gen))
        polys = random_polygons(13, v, h, w, gen, kind)
        got = rasterize_polygons(polys, h, w, rule=rule)
        assert got.dtype == torch.bool and got.shape == (13, h, w)
        assert torch.equal(got, reference(polys, h, w, rule=rule))
        packed = rasterize_polygons(polys, h, w, rule=rule, packed=True)
        assert torch.equal(packed, pack_masks(got))


@needs_ext
def test_coco_bit_exact_with_pycocotools_on_thousands(gen):
    mask_utils = pytest.importorskip("pycocotools.mask")
    checked = 0
    for _ in range(40):
        h, w = random_size(gen, 1, 90)
        v = int(torch.randint(3, 24, (1,), generator=gen))
        polys = random_polygons(60, v, h, w, gen, "mixed")
        if torch.rand(1, generator=gen).item() < 0.3:  # float32 input, as LLM heads produce
            polys = polys.float()
        ours = rasterize_polygons(polys, h, w, rule="coco").numpy()
        rles = mask_utils.frPyObjects([p.double().flatten().tolist() for p in polys], h, w)
        theirs = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)
        np.testing.assert_array_equal(ours, theirs)
        checked += len(polys)
    assert checked == 2400


@needs_ext
@pytest.mark.parametrize("rule", ["center", "coco"])
def test_groups_are_unions(gen, rule):
    h, w = random_size(gen, 10, 60)
    polys = random_polygons(17, 9, h, w, gen, "mixed")
    groups = torch.randint(0, 6, (17,), generator=gen)
    got = rasterize_polygons(polys, h, w, groups=groups, num_masks=7, rule=rule)
    assert got.shape == (7, h, w)
    single = rasterize_polygons(polys, h, w, rule=rule)
    for m in range(7):
        expect = single[groups == m].any(0) if (groups == m).any() else torch.zeros(h, w, dtype=torch.bool)
        assert torch.equal(got[m], expect)
    assert torch.equal(got, reference(polys, h, w, groups=groups, num_masks=7, rule=rule))
    if rule == "coco":  # pycocotools merges an object's polygons the same way
        mask_utils = pytest.importorskip("pycocotools.mask")
        for m in range(6):
            parts = [p.flatten().tolist() for p in polys[groups == m]]
            if parts:
                merged = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w)))
                np.testing.assert_array_equal(got[m].numpy(), merged.astype(bool))


@needs_ext
@pytest.mark.parametrize("rule", ["center", "coco"])
def test_lengths_with_nan_padding(gen, rule):
    h, w = 33, 47
    polys = random_polygons(20, 12, h, w, gen, "mixed")
    lengths = torch.randint(3, 13, (20,), generator=gen)
    padded = polys.clone()
    padded[torch.arange(12) >= lengths[:, None]] = float("nan")
    got = rasterize_polygons(padded, h, w, lengths=lengths, rule=rule)
    for i in range(20):
        alone = rasterize_polygons(polys[i : i + 1, : int(lengths[i])], h, w, rule=rule)[0]
        assert torch.equal(got[i], alone)


@needs_ext
def test_non_contiguous_and_float32_inputs(gen):
    h, w = 29, 31
    polys = random_polygons(10, 8, h, w, gen, "star")
    strided = polys.transpose(0, 1).contiguous().transpose(0, 1)[:, :, [1, 0]][:, :, [1, 0]]
    assert not strided.is_contiguous()
    assert torch.equal(rasterize_polygons(strided, h, w), rasterize_polygons(polys, h, w))
    as_float = polys.float()
    assert torch.equal(rasterize_polygons(as_float, h, w), reference(as_float.double(), h, w))


@needs_ext
def test_shared_edges_never_share_pixels(gen):
    # A random fan of triangles around one point tiles the polygon: every pixel centre inside
    # the fan belongs to exactly one triangle, including centres that lie on shared edges.
    h, w = 40, 40
    for _ in range(5):
        centre = torch.floor((torch.rand(2, generator=gen, dtype=torch.float64) * 10 + 15) * 2) / 2
        angle = (torch.arange(9) + 0.5 * torch.rand(9, generator=gen)) * (2 * torch.pi / 9)
        radius = 8 + 6 * torch.rand(9, generator=gen)
        rim = centre + torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1).double()
        rim = torch.floor(rim * 2) / 2  # half-integers: edges run through pixel centres
        tris = torch.stack([torch.stack([centre, rim[i], rim[(i + 1) % 9]]) for i in range(9)])
        parts = rasterize_polygons(tris, h, w).to(torch.int32).sum(0)
        assert torch.equal(parts > 0, rasterize_polygons(rim[None], h, w)[0])
        assert parts.max() <= 1


@needs_ext
def test_empty_and_zero_sizes():
    empty = torch.zeros(0, 5, 2)
    assert rasterize_polygons(empty, 8, 9).shape == (0, 8, 9)
    assert rasterize_polygons(empty, 8, 9, packed=True).shape == (0, 8, 8)
    assert rasterize_polygons(empty, 8, 9, groups=torch.zeros(0, dtype=torch.long), num_masks=2).shape == (2, 8, 9)
    tri = torch.tensor([[[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]])
    assert rasterize_polygons(tri, 0, 9).shape == (1, 0, 9)
    assert rasterize_polygons(tri, 4, 0).shape == (1, 4, 0)
    assert rasterize_polygons(tri, 4, 0, packed=True).shape == (1, 4, 0)


# ---- bad input ------------------------------------------------------------------------------

TRI = torch.tensor([[[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]])


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: rasterize_polygons(TRI.tolist(), 5, 5), TypeError, "vertices"),
        (lambda: rasterize_polygons(TRI.long(), 5, 5), TypeError, "vertices"),
        (lambda: rasterize_polygons(TRI[0], 5, 5), ValueError, "vertices"),
        (lambda: rasterize_polygons(TRI[:, :, :1], 5, 5), ValueError, "vertices"),
        (lambda: rasterize_polygons(TRI[:, :2], 5, 5), ValueError, "vertices"),
        (lambda: rasterize_polygons(TRI * float("nan"), 5, 5), ValueError, "vertices"),
        (lambda: rasterize_polygons(TRI * float("inf"), 5, 5), ValueError, "vertices"),
        (lambda: rasterize_polygons(TRI * 1e7, 5, 5), ValueError, "vertices"),
        (lambda: rasterize_polygons(TRI, -1, 5), ValueError, "height"),
        (lambda: rasterize_polygons(TRI, 5, -2), ValueError, "width"),
        (lambda: rasterize_polygons(TRI, 5.0, 5), TypeError, "height"),
        (lambda: rasterize_polygons(TRI, 5, True), TypeError, "width"),
        (lambda: rasterize_polygons(TRI, 5, 5, rule="evenodd"), ValueError, "rule"),
        (lambda: rasterize_polygons(TRI, 5, 5, packed=1), TypeError, "packed"),
        (lambda: rasterize_polygons(TRI, 5, 5, lengths=torch.tensor([2])), ValueError, "lengths"),
        (lambda: rasterize_polygons(TRI, 5, 5, lengths=torch.tensor([4])), ValueError, "lengths"),
        (lambda: rasterize_polygons(TRI, 5, 5, lengths=torch.tensor([3.0])), TypeError, "lengths"),
        (lambda: rasterize_polygons(TRI, 5, 5, lengths=torch.tensor([3, 3])), ValueError, "lengths"),
        (lambda: rasterize_polygons(TRI, 5, 5, groups=torch.tensor([-1])), ValueError, "groups"),
        (lambda: rasterize_polygons(TRI, 5, 5, groups=torch.tensor([2]), num_masks=2), ValueError, "groups"),
        (lambda: rasterize_polygons(TRI, 5, 5, groups=torch.tensor([0.0])), TypeError, "groups"),
        (lambda: rasterize_polygons(TRI, 5, 5, num_masks=3), ValueError, "num_masks"),
        (lambda: rasterize_polygons(TRI, 5, 5, lengths=torch.tensor([3], device="meta")), ValueError, "lengths"),
    ],
)
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


def test_nan_in_padding_is_allowed_but_not_in_used_vertices():
    padded = torch.tensor([[[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [float("nan"), 0.0]]])
    assert rasterize_polygons(padded, 6, 6, lengths=torch.tensor([3])).any()
    with pytest.raises(ValueError, match="NaN"):
        rasterize_polygons(padded, 6, 6, lengths=torch.tensor([4]))


# ---- dispatcher integration -----------------------------------------------------------------


@needs_ext
@pytest.mark.parametrize("rule", ["center", "coco"])
@pytest.mark.parametrize("packed", [False, True])
def test_opcheck(gen, rule, packed):
    polys = random_polygons(5, 6, 20, 30, gen, "mixed")
    args = (polys, torch.full((5,), 6), torch.arange(6), 20, 30, rule, packed)
    torch.library.opcheck(torch.ops.segfast.rasterize_polygons.default, args)


@needs_ext
def test_torch_compile_traces_the_op(gen):
    polys = random_polygons(4, 6, 16, 20, gen, "star")
    lengths, offsets = torch.full((4,), 6), torch.arange(5)

    def f(v):
        return torch.ops.segfast.rasterize_polygons(v, lengths, offsets, 16, 20, "center", False).sum((1, 2))

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(polys), f(polys))


@needs_ext
def test_backend_forcing(monkeypatch, gen):
    polys = random_polygons(6, 7, 21, 23, gen, "mixed")
    fast = rasterize_polygons(polys, 21, 23)
    monkeypatch.setenv("SEGFAST_BACKEND", "reference")
    assert torch.equal(rasterize_polygons(polys, 21, 23), fast)
    monkeypatch.setenv("SEGFAST_BACKEND", "cuda")
    with pytest.raises(NotImplementedError, match="cuda: inputs are on cpu"):
        rasterize_polygons(polys, 21, 23)
    monkeypatch.setenv("SEGFAST_BACKEND", "triton")
    with pytest.raises(NotImplementedError, match="only"):
        rasterize_polygons(polys, 21, 23)
    monkeypatch.setenv("SEGFAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="SEGFAST_BACKEND"):
        rasterize_polygons(polys, 21, 23)


def test_missing_extension_falls_back_with_one_warning():
    code = (
        "import sys, warnings; sys.modules['segfast._C'] = None\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import torch, segfast\n"
        "    m = segfast.ops.rasterize_polygons(torch.tensor([[[0.,0.],[4.,0.],[0.,4.]]]), 5, 5)\n"
        "    m = segfast.ops.rasterize_polygons(torch.tensor([[[0.,0.],[4.,0.],[0.,4.]]]), 5, 5)\n"
        "msgs = [str(x.message) for x in w if 'segfast._C' in str(x.message)]\n"
        "assert len(msgs) == 1, msgs\n"
        "assert segfast.build_info()['extension'] is False\n"
        "print(m.flatten().int().tolist())\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True).stdout
    expect = reference(torch.tensor([[[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]]), 5, 5)
    assert out.strip() == str(expect.flatten().int().tolist())


# ---- GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("rule", ["center", "coco"])
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_matches_cpu(gen, rule, packed):
    for h, w in [(1, 1), (37, 45), (64, 64), (130, 257), (256, 1024)]:
        for kind in KINDS:
            polys = random_polygons(19, 11, h, w, gen, kind)
            lengths = torch.randint(3, 12, (19,), generator=gen)
            groups = torch.randint(0, 9, (19,), generator=gen)
            kw = dict(lengths=lengths, groups=groups, num_masks=10, rule=rule, packed=packed)
            cpu = rasterize_polygons(polys, h, w, **kw)
            gpu = rasterize_polygons(polys.cuda(), h, w, **{**kw, "lengths": lengths.cuda(), "groups": groups.cuda()})
            assert gpu.device.type == "cuda"
            assert torch.equal(gpu.cpu(), cpu), (h, w, kind)


@pytest.mark.gpu
def test_cuda_large_batch_and_opcheck(gen):
    polys = random_polygons(1024, 16, 1024, 1024, gen, "star").cuda()
    got = rasterize_polygons(polys, 1024, 1024)
    assert torch.equal(got[:8].cpu(), rasterize_polygons(polys[:8].cpu(), 1024, 1024))
    small = random_polygons(5, 6, 20, 30, gen, "mixed").cuda()
    args = (small, torch.full((5,), 6, device="cuda"), torch.arange(6, device="cuda"), 20, 30, "center", False)
    torch.library.opcheck(torch.ops.segfast.rasterize_polygons.default, args)
