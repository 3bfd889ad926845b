import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import segfast.kernels.ohem
from segfast import kernels
from segfast.nn import OHEMCrossEntropyLoss
from segfast.ops import _reference, ohem_cross_entropy
from segfast.ops.ohem import kth_smallest, select_kept, select_kept_fused
from tests.allocations import Allocations
from tests.launches import Launches

needs_triton = pytest.mark.skipif(
    not kernels.available() or (not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"),
    reason="needs triton on a GPU or under TRITON_INTERPRET=1",
)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(logits, target, **kw):
    kw = dict(kw)
    return _reference.ohem_cross_entropy(
        logits,
        target,
        kw.pop("thresh", None),
        kw.pop("min_kept", 100000),
        kw.pop("ignore_index", 255),
        kw.pop("reduction", "mean"),
        kw.pop("avg_non_ignore", False),
        kw.pop("class_weight", None),
        batch=1 if logits.dim() == 2 else None,
    )


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
    (g_got,) = torch.autograd.grad(got.sum(), xs)
    (g_expect,) = torch.autograd.grad(expect.sum(), xr)
    torch.testing.assert_close(g_got.cpu().double(), g_expect, rtol=2e-5, atol=1e-7)
    kept_got = ohem_cross_entropy(x.to(DEVICE), t.to(DEVICE), **{**kw, "reduction": "none"}).cpu() != 0
    kept_expect = reference(x.double(), t, **{**kw, "reduction": "none"}) != 0
    assert torch.equal(kept_got, kept_expect)


CONFIGS = [
    dict(thresh=0.7, min_kept=10),
    dict(thresh=0.3, min_kept=5, avg_non_ignore=True),
    dict(min_kept=10),
    dict(min_kept=1000),
    dict(min_kept=7, class_weight=[1.0, 2.0, 3.0, 0.5, 1.0]),
    dict(thresh=0.6, min_kept=3, class_weight=[0.2, 2.0, 1.0, 1.0, 4.0]),
    dict(min_kept=7, reduction="sum"),
    dict(min_kept=7, reduction="none"),
    dict(thresh=0.9, min_kept=0),
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
    check_against_reference(x, t, min_kept=2**62)  # a budget (min_kept * 2) past int64
    check_against_reference(x, t, thresh=0.7, min_kept=2**62)


@needs_triton
def test_empty_input_like_the_reference():
    x, t = torch.zeros(0, 3, 4, 5), torch.zeros(0, 4, 5, dtype=torch.long)
    for kw in (dict(reduction="mean"), dict(reduction="sum"), dict(reduction="none"), dict(avg_non_ignore=True)):
        for thresh in (None, 0.7):
            got = ohem_cross_entropy(x.to(DEVICE), t.to(DEVICE), thresh=thresh, min_kept=5, **kw).cpu()
            torch.testing.assert_close(got.double(), reference(x, t, thresh=thresh, min_kept=5, **kw), equal_nan=True)


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
    torch.testing.assert_close(
        loss_fn(x.to(DEVICE), t.to(DEVICE)).cpu().double(),
        2 * reference(x.double(), t, thresh=0.7, min_kept=10),
        rtol=2e-5,
        atol=1e-6,
    )
    args = (x.to(DEVICE).requires_grad_(), t.to(DEVICE), None, 0.7, 10, 255, "mean", False)
    torch.library.opcheck(
        torch.ops.segfast.ohem_ce_forward.default,
        args,
        test_utils=("test_schema", "test_faketensor", "test_autograd_registration"),
    )


X, T = torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)


@pytest.mark.parametrize(
    "call, error, name",
    [
        (lambda: ohem_cross_entropy(X.long(), T), TypeError, "logits"),
        (lambda: ohem_cross_entropy(X, T.float()), TypeError, "target"),
        (lambda: ohem_cross_entropy(X, T[:, :2]), ValueError, "target"),
        (lambda: ohem_cross_entropy(X, T + 3), ValueError, "target"),
        (lambda: ohem_cross_entropy(X, T, reduction="avg"), ValueError, "reduction"),
        (lambda: ohem_cross_entropy(X, T, min_kept=-1), ValueError, "min_kept"),
        (lambda: ohem_cross_entropy(X, T, thresh="0.7"), TypeError, "thresh"),
        (lambda: ohem_cross_entropy(X, T, class_weight=[1.0, 2.0]), ValueError, "class_weight"),
        (lambda: ohem_cross_entropy(X, T, class_weight=[1.0, float("nan"), 1.0]), ValueError, "class_weight"),
        (lambda: ohem_cross_entropy(X, T, class_weight=[1.0, float("inf"), 1.0]), ValueError, "class_weight"),
        # -1 is not a uint8 value: torch's `target != -1` would wrap it to 255 and pass class 255
        (lambda: ohem_cross_entropy(X, (T + 255).to(torch.uint8), ignore_index=-1), ValueError, "target"),
        (lambda: ohem_cross_entropy(X[0, 0, 0], T), ValueError, "logits"),
    ],
)
def test_bad_input_names_the_argument(call, error, name):
    with pytest.raises(error, match=name):
        call()


# ---- ignore_index beyond int32 ---------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("ignore_index", [2**32 + 1, -(2**32) + 2, 2**40])
def test_ignore_index_outside_int32(gen, ignore_index):
    # truncated to int32 these are classes 1, 2 and 0: ignored pixels would be selected
    x, t = inputs(gen, c=5)
    t[t == 255] = ignore_index
    check_against_reference(x, t, min_kept=10, ignore_index=ignore_index)
    check_against_reference(x, t, thresh=0.7, min_kept=10, ignore_index=ignore_index)


@needs_triton
def test_ignore_index_outside_int32_reads_in_bounds():
    """Truncated to int32, 3 * 2^30 is -2^30: a class read gigabytes before the logits. In a child
    process, so that a regression fails this test instead of killing the run."""
    code = (
        "import torch\n"
        "from segfast.ops import ohem_cross_entropy\n"
        "dev = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
        "x = torch.randn(2, 3, 4, 5, device=dev)\n"
        "t = torch.randint(0, 3, (2, 4, 5), device=dev)\n"
        "t[0, 0] = 3 * 2**30\n"
        "for thresh in (None, 0.7):\n"
        "    loss = ohem_cross_entropy(x, t, thresh=thresh, min_kept=5, ignore_index=3 * 2**30)\n"
        "    assert torch.isfinite(loss), loss\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        # compiled on a GPU (the interpreter cannot read CUDA tensors), interpreted without one
        env={**os.environ, "TRITON_INTERPRET": "0" if torch.cuda.is_available() else "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ---- non-finite logits -----------------------------------------------------------------------


def _poison(x, t, kind):
    """One non-ignored pixel (0, :, 1, 2) gets a non-finite logit; t is 1 there."""
    x, t = x.clone(), t.clone()
    t[0, 1, 2] = 1
    if kind == "all nan":
        x[:] = float("nan")
    elif kind == "nan":
        x[0, 3, 1, 2] = float("nan")
    else:
        sign, where = kind.split()
        x[0, 1 if where == "true" else 0, 1, 2] = float(sign + "inf")
    return x, t


KINDS = ["all nan", "nan", "+ true", "+ other", "- true", "- other"]


NUMPY_NAN_WARNINGS = pytest.mark.filterwarnings("ignore::RuntimeWarning:triton.runtime.interpreter")  # numpy on NaN/Inf


@NUMPY_NAN_WARNINGS
@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "reference"])
@pytest.mark.parametrize("thresh", [None, 0.7])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_non_finite_logits_give_non_finite_loss_and_gradient(gen, monkeypatch, backend, thresh, reduction):
    monkeypatch.setenv("SEGFAST_BACKEND", backend)
    x0, t0 = inputs(gen, n=2, c=4, h=3, w=4, ignore=0.2)
    for kind in KINDS:
        x, t = _poison(x0, t0, kind)
        xs = x.to(DEVICE).requires_grad_()
        for kw in (dict(min_kept=3), dict(min_kept=1000), dict(min_kept=3, avg_non_ignore=True)):
            loss = ohem_cross_entropy(xs, t.to(DEVICE), thresh=thresh, reduction=reduction, **kw)
            per_pixel = loss.detach().cpu() if reduction == "none" else None
            assert not torch.isfinite(loss[0, 1, 2] if reduction == "none" else loss), (kind, kw)
            (grad,) = torch.autograd.grad(loss.sum(), xs)
            assert not torch.isfinite(grad[0, :, 1, 2]).any(), (kind, kw)  # not 0 * (finite) either
            if kind != "all nan":
                # the other pixels are untouched: finite gradient, and the map of the others
                others = torch.ones_like(t, dtype=torch.bool)
                others[0, 1, 2] = False
                assert torch.isfinite(grad.movedim(1, -1)[others.to(DEVICE)]).all(), (kind, kw)
                if per_pixel is not None:
                    assert torch.isfinite(per_pixel[others]).all(), (kind, kw)


@NUMPY_NAN_WARNINGS
@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_triton), "reference"])
def test_non_finite_logits_of_ignored_pixels_change_nothing(gen, monkeypatch, backend):
    monkeypatch.setenv("SEGFAST_BACKEND", backend)
    x, t = inputs(gen, n=2, c=4, h=3, w=4, ignore=0.3)
    t[0, 0, 0], t[1, 2, 3] = 255, 255
    clean = x.clone()
    x[0, :, 0, 0] = float("nan")
    x[1, 2, 2, 3] = float("inf")
    for thresh in (None, 0.7):
        xs, xc = x.to(DEVICE).requires_grad_(), clean.to(DEVICE).requires_grad_()
        got = ohem_cross_entropy(xs, t.to(DEVICE), thresh=thresh, min_kept=5)
        expect = ohem_cross_entropy(xc, t.to(DEVICE), thresh=thresh, min_kept=5)
        assert torch.isfinite(got) and got.item() == expect.item()
        (g_got,) = torch.autograd.grad(got, xs)
        (g_expect,) = torch.autograd.grad(expect, xc)
        assert torch.equal(g_got, g_expect)


# ---- the fused selection against the eager one ---------------------------------------------


def sorted_selection(values, valid, thresh, budget):
    """mmseg's selection by a full sort: the plainest statement of the rules."""
    kept = torch.zeros_like(valid)
    idx = valid.nonzero()[:, 0]
    if not len(idx):
        return kept
    if thresh is not None:
        cutoff = torch.sort(values[idx]).values[min(budget, len(idx) - 1)]
        kept[idx] = values[idx] < max(float(cutoff), thresh)
    else:
        kept[idx[torch.sort(values[idx], descending=True, stable=True).indices[:budget]]] = True
    return kept


def selection_cases(gen, thresh):
    """(name, values, valid, budgets): continuous values, a few levels (ties) mixing -0.0 and +0.0,
    all equal; budgets 0, 1, with the cut-off above thresh (values in [-1, 2)), count - 1, past
    the count."""
    levels = torch.tensor([-1.5, -0.0, 0.0, 0.25, 2.0])
    for n in (1, 37, 1025):  # 1025: two programs
        valid = torch.rand(n, generator=gen) < 0.8
        count = int(valid.sum())
        budgets = {0, 1, 2 * count // 3, max(count - 1, 0), count + 5}
        yield f"random n={n}", torch.rand(n, generator=gen) * 3 - 1, valid, budgets
        yield f"ties n={n}", levels[torch.randint(0, 5, (n,), generator=gen)], valid, budgets
        yield f"all equal n={n}", torch.full((n,), 0.375), valid, budgets
    yield "none valid", torch.rand(9, generator=gen), torch.zeros(9, dtype=torch.bool), {0, 3}
    yield "empty", torch.zeros(0), torch.zeros(0, dtype=torch.bool), {0, 3}
    if thresh is not None:
        return
    # many programs; about 14000 ties at the lowest level of which all but 500 are kept: the last
    # one kept lies past 2^16, on the third index byte
    n = 70001
    valid = torch.arange(n) % 1000 != 7
    yield f"ties n={n}", levels[torch.randint(0, 5, (n,), generator=gen)], valid, {int(valid.sum()) - 500}


@needs_triton
@pytest.mark.parametrize("thresh", [None, 0.3])
def test_fused_selection_matches_eager_and_sort(gen, thresh):
    for name, values, valid, budgets in selection_cases(gen, thresh):
        for budget in sorted(budgets):
            expect = sorted_selection(values, valid, thresh, budget)
            eager = select_kept(values, values, valid, thresh, budget)
            fused = select_kept_fused(values.to(DEVICE), values.to(DEVICE), valid.to(DEVICE), thresh, budget).cpu()
            assert torch.equal(eager, expect), (name, budget)
            assert torch.equal(fused, expect), (name, budget)


@needs_triton
def test_fused_selection_budget_past_int64(gen):
    values, valid = torch.rand(50, generator=gen), torch.rand(50, generator=gen) < 0.5
    for thresh in (None, 0.3):
        expect = select_kept(values, values, valid, thresh, 50)
        fused = select_kept_fused(values.to(DEVICE), values.to(DEVICE), valid.to(DEVICE), thresh, 2**64)
        assert torch.equal(fused.cpu(), expect)


@pytest.mark.skipif(not kernels.available(), reason="needs triton")
def test_fused_selection_refuses_cpu_tensors_when_compiled(gen, monkeypatch):
    """Compiled Triton cannot read CPU tensors (on a GPU machine it fails deep in the launcher):
    the fused selection says so by name unless the kernels are interpreted."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    values = torch.rand(10, generator=gen)
    with pytest.raises(ValueError, match="select_kept_fused: inputs are on cpu"):
        select_kept_fused(values, values, values < 0.5, None, 5)


@needs_triton
def test_fused_path_never_syncs_with_the_host(gen):
    """Selection and loss stay on the device: no op reads a tensor back to Python (.item(),
    bool(), indexing by a 0-d tensor all dispatch item or _local_scalar_dense). The input checks of
    ohem_cross_entropy do sync; this runs the op after them."""
    x, t = inputs(gen)
    x = x.to(DEVICE).requires_grad_()
    for thresh in (None, 0.7):
        with Allocations() as seen:
            loss, _, _ = torch.ops.segfast.ohem_ce_forward(x, t.to(DEVICE), None, thresh, 20, 255, "mean", True)
            loss.backward()
            select_kept_fused(x[:, 0].flatten(), x[:, 1].flatten(), t.flatten().to(DEVICE) != 255, thresh, 20)
        assert not {"item", "_local_scalar_dense", "is_nonzero"} & seen.ops


@pytest.mark.gpu
def test_fused_path_never_syncs_on_cuda(gen):
    x, t = (a.cuda() for a in inputs(gen, n=2, c=19, h=64, w=64))
    x.requires_grad_()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for thresh in (None, 0.7):
            loss, _, _ = torch.ops.segfast.ohem_ce_forward(x, t, None, thresh, 100, 255, "mean", True)
            loss.backward()
            select_kept_fused(x[:, 0].flatten(), x[:, 1].flatten(), t.flatten() != 255, thresh, 100)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_triton
def test_launches_run_on_the_inputs_device(gen, monkeypatch):
    launches = Launches(monkeypatch, segfast.kernels.ohem)
    x, t = inputs(gen)
    for thresh in (None, 0.7):
        ohem_cross_entropy(x.to(DEVICE).requires_grad_(), t.to(DEVICE), thresh=thresh, min_kept=5).backward()
    x, t = x.to(DEVICE), t.to(DEVICE)
    select_kept_fused(x[:, 0].flatten(), x[:, 1].flatten(), t.flatten() != 255, None, 5)
    names = {launch.kernel for launch in launches.launches}
    assert names == {
        "ohem_forward_kernel",
        "radix_histogram_kernel",
        "radix_pick_kernel",
        "ohem_finish_kernel",
        "ohem_backward_kernel",
        "radix_kept_kernel",
    }
    assert all(launch.guarded_device == x.to(DEVICE).device for launch in launches.launches)


def test_device_guard_makes_the_inputs_device_current():
    class OnSecondGPU:
        device = torch.device("cuda", 1)

    guard = kernels.device_guard(OnSecondGPU())
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    with kernels.device_guard(torch.zeros(1)):  # CPU (interpreter): nothing to switch
        pass
