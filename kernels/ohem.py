"""Triton kernels of the fused OHEM cross-entropy (segfast.ops.ohem_cross_entropy).

Logits are addressed as pixels x classes: pixel q = (n, s) with s the flat spatial index, class
c at n * stride_n + c * stride_c + s * stride_s, which covers (N, C, H, W) (stride_s = 1) and
(N, C) (one pixel per row) alike. A program owns BLOCK_P pixels and walks the classes in
BLOCK_C chunks with an online softmax, so no N x C x H x W temporary exists.

forward:  per pixel logsumexp, weighted nll (class_weight[y] * (lse - z_y)) and the true-class
          probability exp(z_y - lse); ignored pixels get nll 0.
backward: grad = scale[q] * (softmax - onehot), where scale folds the kept mask, the class
          weight and the reduction; pixels with scale 0 write zeros without reading logits.
"""

import triton
import triton.language as tl


@triton.jit
def ohem_forward_kernel(logits_ptr, target_ptr, class_weight_ptr, lse_ptr, nll_ptr, prob_ptr,
                        n_pixels, n_classes, spatial, stride_n, stride_c, stride_s, ignore_index,
                        HAS_CLASS_WEIGHT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    q = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = q < n_pixels
    base = (q // spatial).to(tl.int64) * stride_n + (q % spatial).to(tl.int64) * stride_s
    running_max = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_P,), tl.float32)
    for c0 in range(0, n_classes, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        ptrs = logits_ptr + base[:, None] + c[None, :].to(tl.int64) * stride_c
        x = tl.load(ptrs, mask=in_range[:, None] & (c[None, :] < n_classes), other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp(running_max - safe_max) + tl.sum(tl.exp(x - safe_max[:, None]), axis=1)
        running_max = new_max
    lse = running_max + tl.log(tl.where(in_range, running_sum, 1.0))  # padding pixels: no log(0)
    target = tl.load(target_ptr + q, mask=in_range, other=ignore_index).to(tl.int32)
    valid = in_range & (target != ignore_index)
    safe_target = tl.where(valid, target, 0)
    z = tl.load(logits_ptr + base + safe_target.to(tl.int64) * stride_c, mask=valid, other=0.0).to(tl.float32)
    nll = tl.where(valid, lse - z, 0.0)
    if HAS_CLASS_WEIGHT:
        nll = nll * tl.load(class_weight_ptr + safe_target, mask=valid, other=0.0).to(tl.float32)
    prob = tl.where(valid, tl.exp(z - lse), 1.0)
    tl.store(lse_ptr + q, lse, mask=in_range)
    tl.store(nll_ptr + q, nll, mask=in_range)
    tl.store(prob_ptr + q, prob, mask=in_range)


@triton.jit
def ohem_backward_kernel(grad_ptr, logits_ptr, target_ptr, lse_ptr, scale_ptr,
                         n_pixels, n_classes, spatial, stride_n, stride_c, stride_s,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    q = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = q < n_pixels
    base = (q // spatial).to(tl.int64) * stride_n + (q % spatial).to(tl.int64) * stride_s
    scale = tl.load(scale_ptr + q, mask=in_range, other=0.0)
    active = in_range & (scale != 0.0)
    lse = tl.load(lse_ptr + q, mask=active, other=0.0)
    target = tl.load(target_ptr + q, mask=active, other=-1).to(tl.int32)
    for c0 in range(0, n_classes, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        offs = base[:, None] + c[None, :].to(tl.int64) * stride_c
        in_tile = in_range[:, None] & (c[None, :] < n_classes)
        x = tl.load(logits_ptr + offs, mask=active[:, None] & (c[None, :] < n_classes), other=0.0).to(tl.float32)
        soft = tl.exp(x - lse[:, None])
        onehot = tl.where(c[None, :] == target[:, None], 1.0, 0.0)
        grad = tl.where(active[:, None], (soft - onehot) * scale[:, None], 0.0)
        tl.store(grad_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=in_tile)
