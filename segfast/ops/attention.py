"""Masked attention for mask-decoder transformers: segfast.ops.masked_attention.

Mask convention: True = MAY ATTEND (PyTorch SDPA's convention). Mask2Former and
nn.MultiheadAttention use the opposite (True = blocked): convert with `attend_mask_from_blocked`,
or build the mask from mask logits with `attend_mask_from_logits`.

The mask is a compact bit set per query, (B, Lq, Lk) shared by all heads or (B, H, Lq, Lk), as
bool or packed bits (segfast.ops.packing). The Triton kernels (FlashAttention-2 style: online
softmax over key tiles, tiles with no allowed key skipped, no Lq x Lk matrix in memory) read
those bits directly. Where they cannot run, the op falls back to SDPA with a boolean mask and
says why in a warning.
"""

import math
import os
import warnings

import torch
import torch.nn.functional as F

from segfast.ops import _reference
from segfast.ops._backend import Backend, choose
from segfast.ops._checks import check_tensor
from segfast.ops.packing import pack_masks, packed_row_bytes, unpack_masks

HEAD_DIMS = (16, 32, 64, 128)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, *,
                     scale: float | None = None, unmask_empty_rows: bool = True) -> torch.Tensor:
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
        raise ValueError(f"k and v must be (B, H, Lk, D) = ({b}, {h}, Lk, {d}) and equal, got {tuple(k.shape)} "
                         f"and {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    lk = k.shape[2]
    packed = _packed_mask(mask, b, h, lq, lk, q.device)
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    # rows with no allowed key (the kernels read this instead of scanning the row twice)
    empty = ~(packed != 0).any(-1)
    args = (q, k, v, packed, empty.to(torch.uint8), float(scale), bool(unmask_empty_rows))
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
        raise ValueError(f"mask ({kind}) must have shape {expect} for q {b, h, lq} and Lk={lk}, got {tuple(mask.shape)}")
    packed = pack_masks(mask) if mask.dtype == torch.bool else mask.contiguous()
    return packed if packed.dim() == 4 else packed[:, None]  # (B, 1 | H, Lq, bytes)


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


def _launch_args(q, k, v, packed, empty):
    words = packed.view(torch.int64)  # (B, 1 | H, Lq, row_words)
    b, h, lq, _ = q.shape
    head_stride = 0 if words.shape[1] == 1 else words.stride(1)
    empty_head_stride = 0 if empty.shape[1] == 1 else empty.stride(1)
    return words, (words.stride(0), head_stride, words.stride(2), empty.stride(0), empty_head_stride)


def _meta(q):
    d = q.shape[-1]
    block = 64 if d <= 64 else 32
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    # the Triton interpreter computes bf16 dot products wrongly; interpret them in fp32
    upcast = q.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1"
    return dict(DOT_PRECISION=precision, UPCAST_DOT=upcast, BLOCK_M=64, BLOCK_N=block, BLOCK_D=d)


@torch.library.custom_op("segfast::masked_attention_fwd", mutates_args=())
def _attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, packed: torch.Tensor, empty: torch.Tensor,
                       scale: float, unmask_empty_rows: bool) -> tuple[torch.Tensor, torch.Tensor]:
    import triton

    from segfast.kernels.attention import attention_forward_kernel

    b, h, lq, d = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(b * h, lq, dtype=torch.float32, device=q.device)
    words, mask_strides = _launch_args(q, k, v, packed, empty)
    meta = _meta(q)
    if lq and b * h:
        attention_forward_kernel[(triton.cdiv(lq, meta["BLOCK_M"]), b * h)](
            q, k, v, words, empty, out, lse, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
            *mask_strides, h, lq, k.shape[2], scale, UNMASK_EMPTY=unmask_empty_rows, **meta)
    return out, lse


@_attention_forward.register_fake
def _(q, k, v, packed, empty, scale, unmask_empty_rows):
    return torch.empty_like(q), q.new_empty((q.shape[0] * q.shape[1], q.shape[2]), dtype=torch.float32)


@torch.library.custom_op("segfast::masked_attention_bwd", mutates_args=())
def _attention_backward(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                        lse: torch.Tensor, packed: torch.Tensor, empty: torch.Tensor, scale: float,
                        unmask_empty_rows: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import triton

    from segfast.kernels.attention import attention_backward_kv_kernel, attention_backward_q_kernel

    b, h, lq, d = q.shape
    lk = k.shape[2]
    grad_out = grad_out.contiguous()
    delta = (grad_out.float() * out.float()).sum(-1).reshape(b * h, lq)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    words, mask_strides = _launch_args(q, k, v, packed, empty)
    meta = _meta(q)
    common = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *mask_strides, h, lq, lk, scale)
    if lk and b * h:
        attention_backward_kv_kernel[(triton.cdiv(lk, meta["BLOCK_N"]), b * h)](
            q, k, v, words, empty, grad_out, lse, delta, dk, dv, *common, UNMASK_EMPTY=unmask_empty_rows, **meta)
    if lq and b * h:
        attention_backward_q_kernel[(triton.cdiv(lq, meta["BLOCK_M"]), b * h)](
            q, k, v, words, empty, grad_out, lse, delta, dq, *common, UNMASK_EMPTY=unmask_empty_rows, **meta)
    return dq, dk, dv


@_attention_backward.register_fake
def _(grad_out, q, k, v, out, lse, packed, empty, scale, unmask_empty_rows):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, packed, empty, scale, unmask = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], packed, empty)
    ctx.scale, ctx.unmask = scale, unmask


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, packed, empty = ctx.saved_tensors
    dq, dk, dv = _attention_backward(grad_out, q, k, v, out, lse, packed, empty, ctx.scale, ctx.unmask)
    return dq, dk, dv, None, None, None, None


_attention_forward.register_autograd(_backward, setup_context=_setup_context)


def _triton_run(q, k, v, packed, empty, scale, unmask):
    out, _ = _attention_forward(q.contiguous(), k.contiguous(), v.contiguous(), packed, empty, scale, unmask)
    return out


def _triton_unsupported(q, k, v, packed, empty, scale, unmask):
    from segfast import kernels

    if not kernels.available():
        return "triton is not installed"
    if q.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"inputs are on {q.device} (TRITON_INTERPRET=1 interprets the kernels on the CPU)"
    if q.shape[-1] not in HEAD_DIMS:
        return f"head dim {q.shape[-1]} is not one of {HEAD_DIMS}"
    if q.dtype == torch.float64:
        return "float64 is not a kernel dtype"
    return None


def _sdpa_run(q, k, v, packed, empty, scale, unmask):
    """SDPA with a boolean mask: materialises (B, 1 | H, Lq, Lk) bits as bools."""
    warnings.warn(f"segfast.ops.masked_attention: the Triton kernel cannot run here "
                  f"({_triton_unsupported(q, k, v, packed, empty, scale, unmask)}); using SDPA with a boolean mask",
                  RuntimeWarning, stacklevel=3)
    attend = unpack_masks(packed, k.shape[2])
    if unmask:
        attend = attend | empty.bool()[..., None]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=scale)
    return torch.where(attend.any(-1, keepdim=True), out, torch.zeros_like(out))  # rows with no key: 0, not NaN


def _reference_run(q, k, v, packed, empty, scale, unmask):
    return _reference.masked_attention(q, k, v, unpack_masks(packed, k.shape[2]), scale, unmask)


_BACKENDS = [
    Backend("triton", _triton_unsupported, _triton_run),
    Backend("reference", lambda q, *a: None if q.dtype == torch.float64 else "the reference serves float64 only",
            _reference_run),
    Backend("sdpa", lambda *a: None, _sdpa_run),
]
