"""Masked attention for mask-decoder transformers: segfast.ops.masked_attention.

Mask convention: True = MAY ATTEND (PyTorch SDPA's convention). Mask2Former and
nn.MultiheadAttention use the opposite (True = blocked): convert with `attend_mask_from_blocked`,
or build the mask from mask logits with `attend_mask_from_logits`.

The mask is a compact bit set per query, (B, Lq, Lk) shared by all heads or (B, H, Lq, Lk), as
bool or packed bits (segfast.ops.packing). The Triton kernels (FlashAttention-2 style: online
softmax over key tiles, no Lq x Lk matrix in memory) read those bits directly, one word per row
and tile; a plan kernel first lists each query block's key blocks with any allowed key, and the
kernels loop over that list only. q, k and v are read through their strides (any layout whose
last dimension is contiguous, such as permuted projections), not copied. Where the kernels
cannot run, the op falls back to SDPA with a boolean mask and says why in a warning.
"""

import math
import os
import warnings

import torch
import torch.nn.functional as F

from segfast.ops import _reference
from segfast.ops._backend import Backend, choose
from segfast.ops._checks import check_tensor
from segfast.ops.packing import pack_masks, packed_row_bytes, unpack_masks, word_aligned

HEAD_DIMS = (16, 32, 64, 128)


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    *,
    scale: float | None = None,
    unmask_empty_rows: bool = True,
) -> torch.Tensor:
    """softmax(q k^T * scale, restricted to the mask) v.

    Args:
        q: (B, H, Lq, D); k, v: (B, H, Lk, D); fp16, bf16 or fp32 (fp32 accumulation).
        mask: True = may attend. (B, Lq, Lk) shared across heads or (B, H, Lq, Lk); bool, or
            packed uint8 with rows of 8 * ceil(Lk / 64) bytes.
        scale: default 1 / sqrt(D).
        unmask_empty_rows: a query with no allowed key attends to every key (Mask2Former's
            rule); when False it outputs zeros. Never NaN either way.
    """
    check_tensor("q", q, ndim=4, floating=True)
    check_tensor("k", k, ndim=4, floating=True, device=q.device)
    check_tensor("v", v, ndim=4, floating=True, device=q.device)
    b, h, lq, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[-1] != d or v.shape != k.shape:
        raise ValueError(
            f"k and v must be (B, H, Lk, D) = ({b}, {h}, Lk, {d}) and equal, got {tuple(k.shape)} and {tuple(v.shape)}"
        )
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    packed = _packed_mask(mask, b, h, lq, k.shape[2], q.device)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    args = (q, k, v, packed, float(scale), bool(unmask_empty_rows))
    return choose("masked_attention", _BACKENDS, *args).run(*args)


def _packed_mask(mask, b, h, lq, lk, device):
    check_tensor("mask", mask, dtypes=(torch.bool, torch.uint8), device=device)
    heads = () if mask.dim() == 3 else (h,)
    if mask.dim() not in (3, 4):
        raise ValueError(f"mask must be (B, Lq, Lk) or (B, H, Lq, Lk), got shape {tuple(mask.shape)}")
    width = lk if mask.dtype == torch.bool else packed_row_bytes(lk)
    expect = (b, *heads, lq, width)
    if tuple(mask.shape) != expect:
        kind = "bool" if mask.dtype == torch.bool else "packed"
        raise ValueError(
            f"mask ({kind}) must have shape {expect} for q {b, h, lq} and Lk={lk}, got {tuple(mask.shape)}"
        )
    packed = pack_masks(mask) if mask.dtype == torch.bool else word_aligned(mask)  # read as int64 words
    return packed if packed.dim() == 4 else packed[:, None]  # (B, 1 | H, Lq, bytes), contiguous


def attend_mask_from_blocked(blocked: torch.Tensor) -> torch.Tensor:
    """Mask2Former / nn.MultiheadAttention masks (True = blocked) -> segfast's (True = may attend)."""
    check_tensor("blocked", blocked, dtypes=(torch.bool,))
    return ~blocked


def attend_mask_from_logits(mask_logits: torch.Tensor, size: tuple, *, packed: bool = True) -> torch.Tensor:
    """Mask2Former's attention mask from the previous layer's mask logits (B, Q, h, w): resized
    to `size` (bilinear, align_corners=False), a pixel may be attended where sigmoid >= 0.5.
    Returns (B, Q, size[0] * size[1]) as packed bits (default) or bool, shared by all heads.
    Mask2Former un-blocks rows that end up fully blocked; masked_attention does the same with
    unmask_empty_rows=True."""
    check_tensor("mask_logits", mask_logits, ndim=4, floating=True)
    resized = F.interpolate(mask_logits, size=tuple(size), mode="bilinear", align_corners=False)
    attend = (resized.sigmoid() >= 0.5).flatten(2)
    return pack_masks(attend) if packed else attend


# ---- the Triton path ----------------------------------------------------------------------


def _meta(q):
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    # the Triton interpreter computes bf16 dot products wrongly; interpret them in fp32
    upcast = q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
    return dict(DOT_PRECISION=precision, UPCAST_DOT=upcast, BLOCK_D=q.shape[-1])


def _grid(n_blocks: int, batch_heads: int) -> tuple:
    """One program per (block, batch, head), all on grid axis 0: CUDA allows 2^31 - 1 there but
    only 65535 on axes 1 and 2, which B*H (or the block count) can pass."""
    programs = n_blocks * batch_heads
    if programs >= 2**31:
        raise ValueError(
            f"q, k: {n_blocks} blocks x {batch_heads} batch-heads = {programs} programs, past CUDA's "
            f"2^31 - 1; split the batch"
        )
    return (programs,)


def _words(packed):
    return packed.view(torch.int64)  # (B, Hm, Lq, n_words)


def _blocks(lq, lk):
    from segfast.kernels.attention import BLOCK_M, BLOCK_N

    return -(-lq // BLOCK_M.value), -(-lk // BLOCK_N.value)


@torch.library.custom_op("segfast::masked_attention_plan", mutates_args=())
def _attention_plan(
    packed: torch.Tensor, lk: int, unmask_empty_rows: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(empty (B, Hm, Lq) uint8, blocks (B, Hm, query blocks, key blocks) int32, counts): per query
    block, the key blocks with any allowed key (the kernels' loop, so empty tiles cost nothing)."""
    from segfast.kernels import device_guard
    from segfast.kernels.attention import attention_plan_kernel

    b, hm, lq, _ = packed.shape
    n_q, n_words = _blocks(lq, lk)
    empty = torch.empty(b, hm, lq, dtype=torch.uint8, device=packed.device)
    blocks = torch.empty(b, hm, n_q, n_words, dtype=torch.int32, device=packed.device)
    counts = torch.empty(b, hm, n_q, dtype=torch.int32, device=packed.device)
    if empty.numel():
        with device_guard(packed):
            attention_plan_kernel[_grid(n_q, b * hm)](
                _words(packed), empty, blocks, counts, hm, lq, lk, n_q, n_words, UNMASK_EMPTY=unmask_empty_rows
            )
    return empty, blocks, counts


@_attention_plan.register_fake
def _(packed, lk, unmask_empty_rows):
    b, hm, lq, _ = packed.shape
    n_q, n_words = _blocks(lq, lk)
    return (
        packed.new_empty(b, hm, lq),
        packed.new_empty(b, hm, n_q, n_words, dtype=torch.int32),
        packed.new_empty(b, hm, n_q, dtype=torch.int32),
    )


def _plan_by_key(packed, empty, lk, unmask_empty_rows):
    """The transposed plan, for dK/dV: per key block the query blocks with any allowed key in it
    ((B, Hm, key blocks, query blocks) int32, and counts). Launch inside device_guard."""
    from segfast.kernels.attention import attention_plan_by_key_kernel

    b, hm, lq, _ = packed.shape
    n_q, n_words = _blocks(lq, lk)
    blocks = torch.empty(b, hm, n_words, n_q, dtype=torch.int32, device=packed.device)
    counts = torch.empty(b, hm, n_words, dtype=torch.int32, device=packed.device)
    if counts.numel():
        attention_plan_by_key_kernel[_grid(n_words, b * hm)](
            _words(packed), empty, blocks, counts, hm, lq, lk, n_q, n_words, UNMASK_EMPTY=unmask_empty_rows
        )
    return blocks, counts


@torch.library.custom_op("segfast::masked_attention_fwd", mutates_args=())
def _attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    packed: torch.Tensor,
    empty: torch.Tensor,
    blocks: torch.Tensor,
    counts: torch.Tensor,
    scale: float,
    unmask_empty_rows: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q, k, v with any strides whose last is 1 (no copies); returns out (like q) and the
    logsumexp (B * H, Lq)."""
    from segfast.kernels import device_guard
    from segfast.kernels.attention import attention_forward_kernel

    b, h, lq, d = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(b * h, lq, dtype=torch.float32, device=q.device)
    n_q, n_words = blocks.shape[2:]
    if lq and b * h:
        with device_guard(q):
            attention_forward_kernel[_grid(n_q, b * h)](
                q,
                k,
                v,
                _words(packed),
                empty,
                out,
                lse,
                blocks,
                counts,
                *q.stride()[:3],
                *k.stride()[:3],
                *v.stride()[:3],
                *out.stride()[:3],
                h,
                packed.shape[1],
                lq,
                k.shape[2],
                n_q,
                n_words,
                scale,
                UNMASK_EMPTY=unmask_empty_rows,
                **_meta(q),
            )
    return out, lse


@_attention_forward.register_fake
def _(q, k, v, packed, empty, blocks, counts, scale, unmask_empty_rows):
    return torch.empty_like(q), q.new_empty((q.shape[0] * q.shape[1], q.shape[2]), dtype=torch.float32)


@torch.library.custom_op("segfast::masked_attention_bwd", mutates_args=())
def _attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    packed: torch.Tensor,
    empty: torch.Tensor,
    blocks: torch.Tensor,
    counts: torch.Tensor,
    scale: float,
    unmask_empty_rows: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from segfast.kernels import device_guard
    from segfast.kernels.attention import attention_backward_kv_kernel, attention_backward_q_kernel

    b, h, lq, d = q.shape
    lk = k.shape[2]
    hm = packed.shape[1]
    n_q, n_words = blocks.shape[2:]
    if grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()
    delta = (grad_out.float() * out.float()).sum(-1).reshape(b * h, lq)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    words = _words(packed)
    common = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *grad_out.stride()[:3])
    sizes = (h, hm, lq, lk, n_q, n_words, scale)
    with device_guard(q):
        if lk and b * h:
            by_key, by_key_counts = _plan_by_key(packed, empty, lk, unmask_empty_rows)
            attention_backward_kv_kernel[_grid(n_words, b * h)](
                q,
                k,
                v,
                words,
                empty,
                grad_out,
                lse,
                delta,
                dk,
                dv,
                by_key,
                by_key_counts,
                *common,
                *dk.stride()[:3],
                *dv.stride()[:3],
                *sizes,
                UNMASK_EMPTY=unmask_empty_rows,
                **_meta(q),
            )
        if lq and b * h:
            attention_backward_q_kernel[_grid(n_q, b * h)](
                q,
                k,
                v,
                words,
                empty,
                grad_out,
                lse,
                delta,
                dq,
                blocks,
                counts,
                *common,
                *dq.stride()[:3],
                *sizes,
                UNMASK_EMPTY=unmask_empty_rows,
                **_meta(q),
            )
    return dq, dk, dv


@_attention_backward.register_fake
def _(grad_out, q, k, v, out, lse, packed, empty, blocks, counts, scale, unmask_empty_rows):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, packed, empty, blocks, counts, scale, unmask = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], packed, empty, blocks, counts)
    ctx.scale, ctx.unmask = scale, unmask


def _backward(ctx, grad_out, _grad_lse):
    dq, dk, dv = _attention_backward(grad_out, *ctx.saved_tensors, ctx.scale, ctx.unmask)
    return dq, dk, dv, None, None, None, None, None, None


_attention_forward.register_autograd(_backward, setup_context=_setup_context)


def _triton_run(q, k, v, packed, scale, unmask):
    # the kernels take any strides with a unit last one: permuted projections are not copied
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    empty, blocks, counts = _attention_plan(packed, k.shape[2], unmask)
    out, _ = _attention_forward(q, k, v, packed, empty, blocks, counts, scale, unmask)
    return out


def _triton_unsupported(q, k, v, packed, scale, unmask):
    from segfast import kernels

    reason = kernels.unusable_on(q.device)
    if reason is not None:
        return reason
    if q.shape[-1] not in HEAD_DIMS:
        return f"head dim {q.shape[-1]} is not one of {HEAD_DIMS}"
    if q.dtype == torch.float64:
        return "float64 is not a kernel dtype"
    return None


def _sdpa_run(q, k, v, packed, scale, unmask):
    """SDPA with a boolean mask: materialises (B, 1 | H, Lq, Lk) bits as bools."""
    warnings.warn(
        f"segfast.ops.masked_attention: the Triton kernel cannot run here "
        f"({_triton_unsupported(q, k, v, packed, scale, unmask)}); using SDPA with a boolean mask",
        RuntimeWarning,
        stacklevel=3,
    )
    attend = unpack_masks(packed, k.shape[2])
    if unmask:
        attend = attend | ~attend.any(-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=scale)
    return torch.where(attend.any(-1, keepdim=True), out, torch.zeros_like(out))  # rows with no key: 0, not NaN


def _reference_run(q, k, v, packed, scale, unmask):
    return _reference.masked_attention(q, k, v, unpack_masks(packed, k.shape[2]), scale, unmask)


_BACKENDS = [
    Backend("triton", _triton_unsupported, _triton_run),
    Backend(
        "reference",
        lambda q, *a: None if q.dtype == torch.float64 else "the reference serves float64 only",
        _reference_run,
    ),
    Backend("sdpa", lambda *a: None, _sdpa_run),
]
