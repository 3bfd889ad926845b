"""OHEM cross-entropy: segfast.ops.ohem_cross_entropy (mmseg's OHEMPixelSampler + CE loss).

The fused path makes one pass over the logits forward (Triton: online softmax over classes;
per-pixel logsumexp, class-weighted nll and true-class probability) and one backward (Triton:
scale * (softmax - onehot), reading logits only for kept pixels). The cut-off is found on the
device by a radix select on the float bits of the per-pixel values (Triton: a 256-bin histogram
and a one-program pick per 8-bit digit, no sort and no host sync); nothing of size N x C x H x W
is allocated except the gradient. `select_kept` is the eager version of the same selection, kept
as the reference the fused one is tested against.

Selection rules (mmseg), budget = min_kept * batch over non-ignored pixels:
  * thresh given: p = softmax probability of the true class; cutoff = the min(budget,
    count - 1)-th smallest p (0-based); keep pixels with p < max(cutoff, thresh). Ties at the
    threshold are all dropped (strict <), so the set is unique.
  * thresh None: keep the `budget` pixels of highest class-weighted loss; among equal losses at
    the cut-off, lower flat indices (n, then row-major position) are kept first.
Kept pixels weigh 1. reduction="mean" divides by all pixels (ignored included), or by the
number of non-ignored pixels (+ float32 eps) with avg_non_ignore, as mmseg does.

Non-finite logits: a non-ignored pixel with any NaN or +-Inf logit takes no part in the
selection, and its loss and the gradient of its logits are NaN, kept or not, so every reduction
is NaN (mmseg's loss * seg_weight is NaN there too, except for a -Inf logit of another class,
which F.cross_entropy absorbs; here that is NaN as well: non-finite input, non-finite loss).
Ignored pixels never reach the loss or the gradient, whatever their logits.
"""

import torch

from segfast.ops import _reference
from segfast.ops._backend import Backend, choose
from segfast.ops._checks import check_choice, check_size, check_tensor

REDUCTIONS = ("mean", "sum", "none")


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    thresh: float | None = None,
    min_kept: int = 100000,
    ignore_index: int = 255,
    reduction: str = "mean",
    avg_non_ignore: bool = False,
    class_weight=None,
) -> torch.Tensor:
    """OHEM cross-entropy with mmseg's rules (see the module doc).

    logits: (N, C, H, W) (or any (N, C, *spatial)) or (N, C), fp32/fp16/bf16/fp64.
    target: (N, H, W) (or (N, *spatial)) or (N,) integer class indices; ignore_index marks
        pixels to skip. For 2-D logits the N rows are the pixels of one batch item (batch = 1).
    Returns a scalar, or the per-pixel kept loss (target's shape) with reduction="none"."""
    check_tensor("logits", logits, floating=True)
    if logits.dim() < 2:
        raise ValueError(f"logits must be (N, C, ...) , got shape {tuple(logits.shape)}")
    check_tensor("target", target, device=logits.device)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor, got {target.dtype}")
    expect = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expect:
        raise ValueError(
            f"target must have shape {expect} to match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    check_choice("reduction", reduction, REDUCTIONS)
    min_kept = check_size("min_kept", min_kept)
    if thresh is not None and (isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or thresh != thresh):
        raise TypeError(f"thresh must be a float or None, got {thresh!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    n_classes = logits.shape[1]
    if class_weight is not None:
        class_weight = torch.as_tensor(class_weight, dtype=torch.float32, device=logits.device)
        if class_weight.shape != (n_classes,):
            raise ValueError(
                f"class_weight must have {n_classes} entries (one per class), got {tuple(class_weight.shape)}"
            )
        if not bool(torch.isfinite(class_weight).all()):
            raise ValueError(f"class_weight must be finite, got {class_weight.tolist()}")
    if target.numel():
        bad = (target < 0) | (target >= n_classes)
        info = torch.iinfo(target.dtype)
        if info.min <= ignore_index <= info.max:  # else no pixel is ignored (torch would wrap it: uint8 255 == -1)
            bad &= target != ignore_index
        if bool(bad.any()):
            raise ValueError(
                f"target must hold class indices in [0, {n_classes}) or ignore_index={ignore_index}, "
                f"found {int(target[bad][0])}"
            )
    batch = 1 if logits.dim() == 2 else logits.shape[0]
    budget = min(min_kept * batch, target.numel())  # the same selection, and an int64 for the op schema
    args = (
        logits,
        target,
        class_weight,
        None if thresh is None else float(thresh),
        budget,
        ignore_index,
        reduction,
        bool(avg_non_ignore),
    )
    return choose("ohem_cross_entropy", _BACKENDS, *args).run(*args)


# ---- selection without sorting ------------------------------------------------------------


def _order_keys(values: torch.Tensor) -> torch.Tensor:
    """float32 -> int64 keys in [0, 2^32) with the same order (sign-magnitude to unsigned)."""
    bits = values.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    negative = bits >= 0x80000000
    return torch.where(negative, bits ^ 0xFFFFFFFF, bits | 0x80000000)


def _from_keys(key: torch.Tensor) -> torch.Tensor:
    """Inverse of _order_keys for one 0-d key."""
    bits = torch.where(key >= 0x80000000, key ^ 0x80000000, key ^ 0xFFFFFFFF)
    bits = torch.where(bits >= 0x80000000, bits - (1 << 32), bits)  # as a signed 32-bit pattern
    return bits.reshape(1).to(torch.int32).view(torch.float32)[0]


def kth_smallest(values: torch.Tensor, mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The k-th smallest (0-based) float32 value among values[mask], by radix select: four passes
    of a 256-bin histogram over one byte of the order-preserving key. k is a 0-d int64 tensor and
    nothing synchronises with the device. With no element selected the result is meaningless."""
    keys = _order_keys(values)
    match = mask.clone()
    prefix = torch.zeros((), dtype=torch.int64, device=values.device)
    k = k.clone()
    for shift in (24, 16, 8, 0):
        digit = (keys >> shift) & 0xFF
        hist = torch.zeros(256, dtype=torch.int64, device=values.device).scatter_add_(0, digit, match.long())
        cum = hist.cumsum(0)
        bin_ = torch.searchsorted(cum, k.reshape(1), right=True)[0].clamp(max=255)
        below = cum.gather(0, (bin_ - 1).clamp(min=0).reshape(1))[0]  # not cum[tensor]: that syncs
        k = k - torch.where(bin_ > 0, below, torch.zeros_like(k))
        prefix = prefix | (bin_ << shift)
        match = match & (digit == bin_)
    return _from_keys(prefix)


def select_kept(
    nll: torch.Tensor, prob: torch.Tensor, valid: torch.Tensor, thresh: float | None, budget: int
) -> torch.Tensor:
    """The kept-pixel mask under mmseg's rules (see the module doc), without a sort: the eager
    reference of `select_kept_fused`. nll and prob must be finite where valid."""
    count = valid.sum()
    if thresh is not None:
        k = torch.clamp(count - 1, min=0, max=budget)
        threshold = torch.clamp(kth_smallest(prob, valid, k), min=thresh)
        return valid & (prob < threshold)
    k = torch.clamp(count - budget, min=0)
    cut = kth_smallest(nll, valid, k)
    above = valid & (nll > cut)
    ties = valid & (nll == cut)
    need = budget - above.sum()
    return above | (ties & (torch.cumsum(ties.long(), 0) <= need))


def select_kept_fused(
    nll: torch.Tensor, prob: torch.Tensor, valid: torch.Tensor, thresh: float | None, budget: int
) -> torch.Tensor:
    """`select_kept` by the Triton radix select: same arguments, same mask, on the device."""
    from segfast.kernels import device_guard, unusable_on
    from segfast.kernels.ohem import radix_kept_kernel

    reason = unusable_on(nll.device)
    if reason is not None:
        raise ValueError(f"select_kept_fused: {reason}; select_kept runs anywhere")

    values = torch.where(valid, nll if thresh is None else prob, float("nan")).float().contiguous()
    kept = torch.empty(values.shape, dtype=torch.uint8, device=values.device)
    n = values.numel()
    if n:
        with device_guard(values):
            state = _radix_select(values, thresh, budget)
            radix_kept_kernel[(_cdiv(n, _BLOCK),)](
                values.reshape(-1),
                kept.reshape(-1),
                state,
                n,
                0.0 if thresh is None else thresh,
                HAS_THRESH=thresh is not None,
                BLOCK=_BLOCK,
            )
    return kept.view(torch.bool)


_BLOCK = 1024  # elements per program of the selection kernels
_MAX_PROGRAMS = 1024  # histogram programs (each adds its 256 bins once): a few per SM


def _cdiv(a, b):
    return -(-a // b)


def _radix_select(values: torch.Tensor, thresh: float | None, budget: int, state: torch.Tensor | None = None):
    """Runs the radix passes over float32 `values` (NaN: not a candidate; at least one element)
    and returns the selection state that segfast.kernels.ohem._kept reads (`state`, zeroed, when
    given). Launch inside device_guard."""
    from segfast.kernels.ohem import RADIX_BINS, STATE_SIZE, radix_histogram_kernel, radix_pick_kernel

    n = values.numel()
    budget = min(budget, n)  # the same selection, and it fits the kernel's int64
    passes = [(shift, False) for shift in (24, 16, 8, 0)]
    if thresh is None:  # ties at the cut are broken by flat index: up to 4 bytes of it
        passes += [(shift, True) for shift in range(8 * (_cdiv(max(n - 1, 1).bit_length(), 8) - 1), -1, -8)]
    if state is None:
        state = torch.zeros(STATE_SIZE, dtype=torch.int64, device=values.device)
    hist = torch.zeros(len(passes), RADIX_BINS.value, dtype=torch.int64, device=values.device)
    programs = min(_cdiv(n, _BLOCK), _MAX_PROGRAMS)
    for i, (shift, index_pass) in enumerate(passes):
        radix_histogram_kernel[(programs,)](values, state, hist[i], n, SHIFT=shift, INDEX_PASS=index_pass, BLOCK=_BLOCK)
        radix_pick_kernel[(1,)](
            hist[i],
            state,
            budget,
            SHIFT=shift,
            FIRST=i == 0,
            LAST_VALUE_PASS=i == 3,
            INDEX_PASS=index_pass,
            HAS_THRESH=thresh is not None,
        )
    return state


# ---- the fused Triton path ----------------------------------------------------------------


def _pixel_layout(logits):
    """(spatial size, stride_n, stride_c, stride_s) of contiguous logits as pixels x classes."""
    n, c = logits.shape[:2]
    spatial = logits.shape[2:].numel()
    return spatial, c * spatial, spatial, 1


def _blocks(n_classes):
    block_c = max(2, min(64, 1 << (n_classes - 1).bit_length()))
    return max(16, min(1024, 4096 // block_c)), block_c


@torch.library.custom_op("segfast::ohem_ce_forward", mutates_args=())
def _ohem_forward(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weight: torch.Tensor | None,
    thresh: float | None,
    budget: int,
    ignore_index: int,
    reduction: str,
    avg_non_ignore: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, lse, scale): the reduced (or per-pixel) loss, each pixel's logsumexp, and
    each pixel's d loss / d nll (kept * class weight / denominator) for the backward."""
    from segfast.kernels import device_guard
    from segfast.kernels.ohem import STATE_SIZE, ohem_finish_kernel, ohem_forward_kernel

    n_pixels = target.numel()
    flat_t = target.reshape(-1)
    lse = torch.empty(n_pixels, dtype=torch.float32, device=logits.device)
    nll, loss_map, scale = torch.empty_like(lse), torch.empty_like(lse), torch.empty_like(lse)
    prob = torch.empty_like(lse) if thresh is not None else nll  # (unused without thresh)
    spatial, sn, sc, ss = _pixel_layout(logits)
    block_p, block_c = _blocks(logits.shape[1])
    per_valid = reduction == "mean" and avg_non_ignore
    denominator = float(n_pixels) if reduction == "mean" and not avg_non_ignore else 1.0
    cw = class_weight if class_weight is not None else lse
    if n_pixels:
        with device_guard(logits):
            state = torch.zeros(STATE_SIZE, dtype=torch.int64, device=logits.device)
            ohem_forward_kernel[(_cdiv(n_pixels, block_p),)](
                logits,
                flat_t,
                cw,
                lse,
                nll,
                prob,
                state,
                n_pixels,
                logits.shape[1],
                spatial,
                sn,
                sc,
                ss,
                ignore_index,
                HAS_CLASS_WEIGHT=class_weight is not None,
                HAS_THRESH=thresh is not None,
                COUNT_VALID=per_valid,
                BLOCK_P=block_p,
                BLOCK_C=block_c,
            )
            _radix_select(prob if thresh is not None else nll, thresh, budget, state)
            ohem_finish_kernel[(_cdiv(n_pixels, _BLOCK),)](
                flat_t,
                nll,
                prob,
                cw,
                state,
                loss_map,
                scale,
                n_pixels,
                ignore_index,
                0.0 if thresh is None else thresh,
                denominator,
                HAS_CLASS_WEIGHT=class_weight is not None,
                HAS_THRESH=thresh is not None,
                AVG_NON_IGNORE=per_valid,
                BLOCK=_BLOCK,
            )
    if reduction == "none":
        return loss_map.reshape(target.shape), lse, scale
    loss = loss_map.sum()
    if not n_pixels and reduction == "mean" and not avg_non_ignore:
        loss = loss / 0.0  # the mean of no pixels is NaN, as torch's and the reference's
    return loss, lse, scale


@_ohem_forward.register_fake
def _(logits, target, class_weight, thresh, budget, ignore_index, reduction, avg_non_ignore):
    n_pixels = target.numel()
    loss = logits.new_empty(target.shape if reduction == "none" else (), dtype=torch.float32)
    return loss, logits.new_empty(n_pixels, dtype=torch.float32), logits.new_empty(n_pixels, dtype=torch.float32)


@torch.library.custom_op("segfast::ohem_ce_backward", mutates_args=())
def _ohem_backward(scale: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """d loss / d logits = scale[pixel] * (softmax - onehot), zero where scale is 0."""
    from segfast.kernels import device_guard
    from segfast.kernels.ohem import ohem_backward_kernel

    grad = torch.empty_like(logits)
    n_pixels = target.numel()
    spatial, sn, sc, ss = _pixel_layout(logits)
    block_p, block_c = _blocks(logits.shape[1])
    if n_pixels:
        with device_guard(logits):
            ohem_backward_kernel[(_cdiv(n_pixels, block_p),)](
                grad,
                logits,
                target.reshape(-1),
                lse,
                scale.contiguous(),
                n_pixels,
                logits.shape[1],
                spatial,
                sn,
                sc,
                ss,
                BLOCK_P=block_p,
                BLOCK_C=block_c,
            )
    return grad


@_ohem_backward.register_fake
def _(scale, logits, target, lse):
    return torch.empty_like(logits)


def _setup_context(ctx, inputs, output):
    logits, target, *_, reduction, _avg = inputs
    ctx.save_for_backward(logits, target, output[1], output[2])
    ctx.per_pixel = reduction == "none"


def _backward(ctx, grad_loss, _grad_lse, _grad_scale):
    logits, target, lse, scale = ctx.saved_tensors
    g = grad_loss.reshape(-1).float() if ctx.per_pixel else grad_loss.float()
    return _ohem_backward(scale * g, logits, target, lse), None, None, None, None, None, None, None


_ohem_forward.register_autograd(_backward, setup_context=_setup_context)


def _fused(logits, target, class_weight, thresh, budget, ignore_index, reduction, avg_non_ignore):
    loss, _, _ = _ohem_forward(
        logits.contiguous(), target.contiguous(), class_weight, thresh, budget, ignore_index, reduction, avg_non_ignore
    )
    return loss.to(logits.dtype)


def _triton_unsupported(logits, *_):
    from segfast import kernels

    reason = kernels.unusable_on(logits.device)
    if reason is not None:
        return reason
    if logits.dtype == torch.float64:
        return "float64 logits go to the float64 reference"
    return None


def _reference_run(logits, target, class_weight, thresh, budget, ignore_index, reduction, avg_non_ignore):
    out = _reference.ohem_cross_entropy(
        logits, target, thresh, budget, ignore_index, reduction, avg_non_ignore, class_weight, batch=1
    )
    return out.to(logits.dtype)


_BACKENDS = [Backend("triton", _triton_unsupported, _fused), Backend("reference", lambda *a: None, _reference_run)]
