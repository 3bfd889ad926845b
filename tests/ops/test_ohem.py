import os

import pytest
import torch
import torch.nn.functional as F

from segfast import kernels
from segfast.nn import OHEMCrossEntropyLoss
from segfast.ops import _reference, ohem_cross_entropy
from segfast.ops.ohem import kth_smallest
from tests.allocations import Allocations

needs_triton = pytest.mark.skipif(
    not kernels.available() or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton on a GPU or under TRITON_INTERPRET=1")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(logits, target, **kw):
    kw = dict(kw)
    return _reference.ohem_cross_entropy(
        logits, target, kw.pop("thresh", None), kw.pop("min_kept", 100000), kw.pop("ignore_index", 255),
        kw.pop("reduction", "mean"), kw.pop("avg_non_ignore", False), kw.pop("class_weight", None),
        batch=1 if logits.dim() == 2 else None)


def inputs(gen, n=2, c=5, h=7, w=9, ignore=0.2):
    x = torch.randn(n, c, h, w, generator=gen) * 2
    t = torch.randint(0, c, (n, h, w), generator=gen)
    t[torch.rand(n, h, w, generator=gen) < ignore] = 255
    return x, t


def check_against_reference(x, t, **kw):
    """Loss value, kept-pixel set and gradient against the float64 reference."""
    xs = x.to(DEVICE).requires_grad_()
    got = ohem_cross_entropy(xs, t.to(DEVICE), **kw)
    xr = x.double().requires_grad_()
    expect = reference(xr, t, **kw)
    torch.testing.assert_close(got.detach().cpu().double(), expect.detach(), rtol=2e-5, atol=1e-6)
    g_got, = torch.autograd.grad(got.sum(), xs)
    g_expect, = torch.autograd.grad(expect.sum(), xr)
    torch.testing.assert_close(g_got.cpu().double(), g_expect, rtol=2e-5, atol=1e-7)
    kept_got = ohem_cross_entropy(x.to(DEVICE), t.to(DEVICE), **{**kw, "reduction": "none"}).cpu() != 0
    kept_expect = reference(x.double(), t, **{**kw, "reduction": "none"}) != 0
    assert torch.equal(kept_got, kept_expect)


CONFIGS = [
    dict(thresh=0.7, min_kept=10), dict(thresh=0.3, min_kept=5, avg_non_ignore=True), dict(min_kept=10),
    dict(min_kept=1000), dict(min_kept=7, class_weight=[1.0, 2.0, 3.0, 0.5, 1.0]),
    dict(thresh=0.6, min_kept=3, class_weight=[0.2, 2.0, 1.0, 1.0, 4.0]), dict(min_kept=7, reduction="sum"),
    dict(min_kept=7, reduction="none"), dict(thresh=0.9, min_kept=0),
]


@needs_triton
@pytest.mark.parametrize("kw", CONFIGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_fused_matches_reference(gen, kw):
    check_against_reference(*inputs(gen), **kw)


@needs_triton
@pytest.mark.parametrize("c", [1, 2, 3, 19, 70, 150])
def test_class_counts(gen, c):
    x, t = inputs(gen, n=2, c=c, h=5, w=11)
    check_against_reference(x, t, min_kept=12)
    check_against_reference(x, t, thresh=0.5, min_kept=12)


@needs_triton
def test_two_dimensional_logits(gen):
    x = torch.randn(53, 6, generator=gen)
    t = torch.randint(0, 6, (53,), generator=gen)
    t[::7] = 255
    check_against_reference(x, t, min_kept=20)
    check_against_reference(x, t, thresh=0.4, min_kept=20)


@needs_triton
def test_all_ignored_and_budget_beyond_valid(gen):
    x, t = inputs(gen)
    t[:] = 255
    loss = ohem_cross_entropy(x.to(DEVICE).requires_grad_(), t.to(DEVICE), min_kept=5)
    assert loss.item() == 0.0
    check_against_reference(x, t, min_kept=5)
    check_against_reference(x, t, thresh=0.7, min_kept=5)
    x, t = inputs(gen)
    check_against_reference(x, t, min_kept=10**6)  # every valid pixel kept
    check_against_reference(x, t, thresh=0.7, min_kept=10**6)


@needs_triton
def test_many_equal_probabilities(gen):
    # identical logits at every pixel: all losses and probabilities tie exactly
    x = torch.randn(1, 4, 1, 1, generator=gen).expand(2, 4, 6, 8).contiguous()
    t = torch.full((2, 6, 8), 2)
    t[0, 0, :3] = 255
    for kw in (dict(min_kept=5), dict(min_kept=17), dict(thresh=0.99, min_kept=5), dict(thresh=0.01, min_kept=5)):
        check_against_reference(x, t, **kw)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_within_twice_plain_pytorch(gen, dtype):
    x, t = inputs(gen, n=2, c=19, h=16, w=16)
    x = x.to(dtype)
    exact = reference(x.double(), t, min_kept=100)
    kept = reference(x.double(), t, min_kept=100, reduction="none") != 0
    plain_map = F.cross_entropy(x.to(DEVICE), t.to(DEVICE), ignore_index=255, reduction="none").cpu()
    plain = (plain_map * kept).sum().double() / t.numel()
    ours = ohem_cross_entropy(x.to(DEVICE), t.to(DEVICE), min_kept=100).cpu().double()
    assert (ours - exact).abs() <= 2 * (plain - exact).abs(), (float(ours - exact), float(plain - exact))


def test_gradcheck_reference_path(gen):
    x, t = inputs(gen, n=1, c=3, h=3, w=4)
    xd = x.double().requires_grad_()  # float64 logits take the reference path
    assert torch.autograd.gradcheck(lambda z: ohem_cross_entropy(z, t, min_kept=5), (xd,))
    assert torch.autograd.gradcheck(lambda z: ohem_cross_entropy(z, t, thresh=0.6, min_kept=2), (xd,))


def test_kth_smallest_is_exact(gen):
    for n in (1, 7, 1000):
        values = torch.randn(n, generator=gen) * torch.randint(0, 3, (n,), generator=gen)  # negatives, zeros, ties
        mask = torch.rand(n, generator=gen) < 0.7
        mask[0] = True
        chosen = torch.sort(values[mask]).values
        for k in {0, len(chosen) // 2, len(chosen) - 1}:
            assert kth_smallest(values, mask, torch.tensor(k)).item() == chosen[k].item()


@needs_triton
def test_no_sort_and_no_logits_sized_temporaries(gen):
    x, t = inputs(gen, n=2, c=19, h=8, w=8)
    xs = x.to(DEVICE).requires_grad_()
    with Allocations() as forward:
        loss = ohem_cross_entropy(xs, t.to(DEVICE), min_kept=20)
    with Allocations() as backward:
        loss.backward()
    assert not {"sort", "topk", "kthvalue", "argsort"} & (forward.ops | backward.ops)
    big = lambda seen: sum(n >= x.numel() for n in seen.float_sizes)  # noqa: E731
    assert big(forward) == 0 and big(backward) <= 2  # the gradient (and autograd's accumulation of it)


@needs_triton
def test_module_and_opcheck(gen):
    x, t = inputs(gen)
    loss_fn = OHEMCrossEntropyLoss(thresh=0.7, min_kept=10, loss_weight=2.0)
    torch.testing.assert_close(loss_fn(x.to(DEVICE), t.to(DEVICE)).cpu().double(),
                               2 * reference(x.double(), t, thresh=0.7, min_kept=10), rtol=2e-5, atol=1e-6)
    args = (x.to(DEVICE).requires_grad_(), t.to(DEVICE), None, 0.7, 10, 255, "mean", False)
    torch.library.opcheck(torch.ops.segfast.ohem_ce_forward.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


X, T = torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)


@pytest.mark.parametrize("call, error, name", [
    (lambda: ohem_cross_entropy(X.long(), T), TypeError, "logits"),
    (lambda: ohem_cross_entropy(X, T.float()), TypeError, "target"),
    (lambda: ohem_cross_entropy(X, T[:, :2]), ValueError, "target"),
    (lambda: ohem_cross_entropy(X, T + 3), ValueError, "target"),
    (lambda: ohem_cross_entropy(X, T, reduction="avg"), ValueError, "reduction"),
    (lambda: ohem_cross_entropy(X, T, min_kept=-1), ValueError, "min_kept"),
    (lambda: ohem_cross_entropy(X, T, thresh="0.7"), TypeError, "thresh"),
    (lambda: ohem_cross_entropy(X, T, class_weight=[1.0, 2.0]), ValueError, "class_weight"),
    (lambda: ohem_cross_entropy(X[0, 0, 0], T), ValueError, "logits"),
])
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()
