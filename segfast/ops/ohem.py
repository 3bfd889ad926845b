"""OHEM cross-entropy: segfast.ops.ohem_cross_entropy (mmseg's OHEMPixelSampler + CE loss).

The fused path makes one pass over the logits forward (Triton: online softmax over classes;
per-pixel logsumexp, class-weighted nll and true-class probability) and one backward (Triton:
scale * (softmax - onehot), reading logits only for kept pixels). The cut-off is found by a
radix select on the float bits of the per-pixel values (four 256-bin histogram passes), not a
sort; nothing of size N x C x H x W is allocated except the gradient.

Selection rules (mmseg), budget = min_kept * batch over non-ignored pixels:
  * thresh given: p = softmax probability of the true class; cutoff = the min(budget,
    count - 1)-th smallest p (0-based); keep pixels with p < max(cutoff, thresh). Ties at the
    threshold are all dropped (strict <), so the set is unique.
  * thresh None: keep the `budget` pixels of highest class-weighted loss; among equal losses at
    the cut-off, lower flat indices (n, then row-major position) are kept first.
Kept pixels weigh 1. reduction="mean" divides by all pixels (ignored included), or by the
number of non-ignored pixels (+ float32 eps) with avg_non_ignore, as mmseg does.
"""

import os
from typing import Optional

import torch

from segfast.ops import _reference
from segfast.ops._backend import Backend, choose
from segfast.ops._checks import check_choice, check_size, check_tensor

REDUCTIONS = ("mean", "sum", "none")


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, thresh: float | None = None,
                       min_kept: int = 100000, ignore_index: int = 255, reduction: str = "mean",
                       avg_non_ignore: bool = False, class_weight=None) -> torch.Tensor:
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
        raise ValueError(f"target must have shape {expect} to match logits {tuple(logits.shape)}, got {tuple(target.shape)}")
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
            raise ValueError(f"class_weight must have {n_classes} entries (one per class), got {tuple(class_weight.shape)}")
    if target.numel():
        bad = (target != ignore_index) & ((target < 0) | (target >= n_classes))
        if bool(bad.any()):
            raise ValueError(f"target must hold class indices in [0, {n_classes}) or ignore_index={ignore_index}, "
                             f"found {int(target[bad][0])}")
    batch = 1 if logits.dim() == 2 else logits.shape[0]
    budget = min_kept * batch
    args = (logits, target, class_weight, None if thresh is None else float(thresh), budget, ignore_index,
            reduction, bool(avg_non_ignore))
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
        k = k - torch.where(bin_ > 0, cum[(bin_ - 1).clamp(min=0)], torch.zeros_like(k))
        prefix = prefix | (bin_ << shift)
        match = match & (digit == bin_)
    return _from_keys(prefix)


def select_kept(nll: torch.Tensor, prob: torch.Tensor, valid: torch.Tensor, thresh: float | None,
                budget: int) -> torch.Tensor:
    """The kept-pixel mask under mmseg's rules (see the module doc), without a sort."""
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


# ---- the fused Triton path ----------------------------------------------------------------


def _pixel_layout(logits):
    """(spatial size, stride_n, stride_c, stride_s) of contiguous logits as pixels x classes."""
    n, c = logits.shape[:2]
    spatial = logits[0, 0].numel() if logits.dim() > 2 else 1
    return spatial, c * spatial, spatial, 1


def _blocks(n_classes):
    block_c = max(2, min(64, 1 << (n_classes - 1).bit_length()))
    return max(16, min(1024, 4096 // block_c)), block_c


@torch.library.custom_op("segfast::ohem_ce_forward", mutates_args=())
def _ohem_forward(logits: torch.Tensor, target: torch.Tensor, class_weight: Optional[torch.Tensor],
                  thresh: Optional[float], budget: int, ignore_index: int, reduction: str,
                  avg_non_ignore: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (loss, lse, scale): the reduced (or per-pixel) loss, each pixel's logsumexp, and
    each pixel's d loss / d nll (kept * class weight / denominator) for the backward."""
    from segfast.kernels.ohem import ohem_forward_kernel

    import triton

    n_pixels = target.numel()
    flat_t = target.reshape(-1)
    lse = torch.empty(n_pixels, dtype=torch.float32, device=logits.device)
    nll, prob = torch.empty_like(lse), torch.empty_like(lse)
    spatial, sn, sc, ss = _pixel_layout(logits)
    block_p, block_c = _blocks(logits.shape[1])
    if n_pixels:
        ohem_forward_kernel[(triton.cdiv(n_pixels, block_p),)](
            logits, flat_t, class_weight if class_weight is not None else lse, lse, nll, prob,
            n_pixels, logits.shape[1], spatial, sn, sc, ss, ignore_index,
            HAS_CLASS_WEIGHT=class_weight is not None, BLOCK_P=block_p, BLOCK_C=block_c)
    valid = flat_t != ignore_index
    kept = select_kept(nll, prob, valid, thresh, budget)
    loss_map = torch.where(kept, nll, torch.zeros_like(nll))
    pixel_weight = kept.float()
    if class_weight is not None:
        pixel_weight = pixel_weight * class_weight[torch.where(valid, flat_t, 0).long()]
    if reduction == "none":
        return loss_map.reshape(target.shape), lse, pixel_weight
    if reduction == "sum":
        return loss_map.sum(), lse, pixel_weight
    denom = (valid.sum().float() + torch.finfo(torch.float32).eps) if avg_non_ignore else float(n_pixels)
    return loss_map.sum() / denom, lse, pixel_weight / denom


@_ohem_forward.register_fake
def _(logits, target, class_weight, thresh, budget, ignore_index, reduction, avg_non_ignore):
    n_pixels = target.numel()
    loss = logits.new_empty(target.shape if reduction == "none" else (), dtype=torch.float32)
    return loss, logits.new_empty(n_pixels, dtype=torch.float32), logits.new_empty(n_pixels, dtype=torch.float32)


@torch.library.custom_op("segfast::ohem_ce_backward", mutates_args=())
def _ohem_backward(scale: torch.Tensor, logits: torch.Tensor, target: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """d loss / d logits = scale[pixel] * (softmax - onehot), zero where scale is 0."""
    from segfast.kernels.ohem import ohem_backward_kernel

    import triton

    grad = torch.empty_like(logits)
    n_pixels = target.numel()
    spatial, sn, sc, ss = _pixel_layout(logits)
    block_p, block_c = _blocks(logits.shape[1])
    if n_pixels:
        ohem_backward_kernel[(triton.cdiv(n_pixels, block_p),)](
            grad, logits, target.reshape(-1), lse, scale.contiguous(), n_pixels, logits.shape[1], spatial, sn, sc, ss,
            BLOCK_P=block_p, BLOCK_C=block_c)
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
    loss, _, _ = _ohem_forward(logits.contiguous(), target.contiguous(), class_weight, thresh, budget, ignore_index,
                               reduction, avg_non_ignore)
    return loss.to(logits.dtype)


def _triton_unsupported(logits, *_):
    from segfast import kernels

    if not kernels.available():
        return "triton is not installed"
    if logits.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"inputs are on {logits.device} (set TRITON_INTERPRET=1 to interpret the kernels on the CPU)"
    if logits.dtype == torch.float64:
        return "float64 logits go to the float64 reference"
    return None


def _reference_run(logits, target, class_weight, thresh, budget, ignore_index, reduction, avg_non_ignore):
    out = _reference.ohem_cross_entropy(logits, target, thresh, budget, ignore_index, reduction, avg_non_ignore,
                                        class_weight, batch=1)
    return out.to(logits.dtype)


_BACKENDS = [Backend("triton", _triton_unsupported, _fused), Backend("reference", lambda *a: None, _reference_run)]
