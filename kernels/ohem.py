"""Triton kernels of the fused OHEM cross-entropy (segfast.ops.ohem_cross_entropy).

Logits are addressed as pixels x classes: pixel q = (n, s) with s the flat spatial index, class
c at n * stride_n + c * stride_c + s * stride_s, which covers (N, C, H, W) (stride_s = 1) and
(N, C) (one pixel per row) alike. A program owns BLOCK_P pixels and walks the classes in
BLOCK_C chunks with an online softmax, so no N x C x H x W temporary exists.

forward:  per pixel logsumexp, weighted nll (class_weight[y] * (lse - z_y)) and, with a
          threshold, the true-class probability exp(z_y - lse). nll and prob are NaN where a
          pixel takes no part in the selection: ignored, or a logit that is not finite.
select:   radix select of the cut-off on the order-preserving 32-bit key of nll or prob, all
          on the device: per pass, `radix_histogram_kernel` counts one 8-bit digit of the
          candidates (256 bins, one atomic add per bin and program) and `radix_pick_kernel`
          (one program) picks the bin that holds the k-th key and narrows the prefix. Four value
          passes find the cut; without a threshold, when only some of the pixels equal to the
          cut fit the budget, index passes find the flat index up to which those ties are kept.
finish:   kept mask, loss map (NaN for non-finite pixels), and each pixel's d loss / d nll.
backward: grad = scale[q] * (softmax - onehot); pixels with scale 0 write zeros without reading
          logits (a NaN scale, from a non-finite pixel, reads them and gives NaN).

Covered on the CPU: every kernel's arithmetic, masking, index math and the selection rules,
against the float64 reference and the eager radix select (TRITON_INTERPRET=1,
tests/ops/test_ohem.py), and that each kernel compiles for sm_90 (tests/ops/test_triton_compile.py).
Only a GPU run checks: the compiled code's results (tl.histogram's lowering, int64 atomics),
programs adding into the histogram concurrently, and speed.
"""

import triton
import triton.language as tl

# slots of the int64 selection state (segfast.ops.ohem allocates it zeroed)
# (constexpr: jitted code reads only constexpr globals; Python reads .value)
COUNT, K0, K, PREFIX, MODE, INDEX_PREFIX, VALID = (tl.constexpr(i) for i in range(7))
STATE_SIZE = 8
# MODE without a threshold: what happens to the pixels equal to the cut
TIES_ALL, TIES_BY_INDEX = tl.constexpr(0), tl.constexpr(1)
RADIX_BITS, RADIX_BINS = tl.constexpr(8), tl.constexpr(256)


@triton.jit
def _order_key(v):
    """float32 -> int64 in [0, 2^32) with the same order; -0.0 keys as +0.0 so equal values tie.
    NaN gets a key too: callers mask it out."""
    bits = tl.where(v == 0.0, 0.0, v).to(tl.int32, bitcast=True)
    signed = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # negatives: larger magnitude, smaller key
    return signed.to(tl.int64) - (-2147483648)


@triton.jit
def _from_key(key):
    signed = (key + (-2147483648)).to(tl.int32)
    return (signed ^ ((signed >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)


@triton.jit
def ohem_forward_kernel(
    logits_ptr,
    target_ptr,
    class_weight_ptr,
    lse_ptr,
    nll_ptr,
    prob_ptr,
    state_ptr,
    n_pixels,
    n_classes,
    spatial,
    stride_n,
    stride_c,
    stride_s,
    ignore_index,
    HAS_CLASS_WEIGHT: tl.constexpr,
    HAS_THRESH: tl.constexpr,
    COUNT_VALID: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    q = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = q < n_pixels
    base = (q // spatial) * stride_n + (q % spatial) * stride_s
    running_max = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    running_sum = tl.zeros((BLOCK_P,), tl.float32)
    n_nonfinite = tl.zeros((BLOCK_P,), tl.int32)
    for c0 in range(0, n_classes, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        in_tile = in_range[:, None] & (c[None, :] < n_classes)
        x = tl.load(
            logits_ptr + base[:, None] + c[None, :].to(tl.int64) * stride_c, mask=in_tile, other=float("-inf")
        ).to(tl.float32)
        n_nonfinite += tl.sum((in_tile & ~(tl.abs(x) < float("inf"))).to(tl.int32), axis=1)
        new_max = tl.maximum(running_max, tl.max(x, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        running_sum = running_sum * tl.exp(running_max - safe_max) + tl.sum(tl.exp(x - safe_max[:, None]), axis=1)
        running_max = new_max
    lse = running_max + tl.log(tl.where(in_range, running_sum, 1.0))  # padding pixels: no log(0)
    # compared as int64: an ignore_index outside int32 must not alias a class
    target = tl.load(target_ptr + q, mask=in_range, other=0).to(tl.int64)
    valid = in_range & (target != ignore_index)
    selectable = valid & (n_nonfinite == 0)
    safe_target = tl.where(selectable, target, 0)
    z = tl.load(logits_ptr + base + safe_target * stride_c, mask=selectable, other=0.0).to(tl.float32)
    nll = lse - z
    if HAS_CLASS_WEIGHT:
        nll = nll * tl.load(class_weight_ptr + safe_target, mask=selectable, other=1.0).to(tl.float32)
    tl.store(lse_ptr + q, lse, mask=in_range)
    tl.store(nll_ptr + q, tl.where(selectable, nll, float("nan")), mask=in_range)
    if HAS_THRESH:
        tl.store(prob_ptr + q, tl.where(selectable, tl.exp(z - lse), float("nan")), mask=in_range)
    if COUNT_VALID:
        tl.atomic_add(state_ptr + VALID, tl.sum(valid.to(tl.int64)))


@triton.jit
def radix_histogram_kernel(
    values_ptr, state_ptr, hist_ptr, n, SHIFT: tl.constexpr, INDEX_PASS: tl.constexpr, BLOCK: tl.constexpr
):
    """Adds to hist_ptr[0:256] the histogram of one 8-bit digit over the candidates: non-NaN
    values whose key matches the prefix chosen by the earlier passes above bit SHIFT + 8. An
    index pass digits the flat index of the values equal to the cut, and runs only when the
    value passes left ties to break."""
    prefix = tl.load(state_ptr + PREFIX)
    n_tiles = tl.cdiv(n, BLOCK)
    if INDEX_PASS:
        index_prefix = tl.load(state_ptr + INDEX_PREFIX)
        n_tiles = tl.where(tl.load(state_ptr + MODE) == TIES_BY_INDEX, n_tiles, 0)
    hist = tl.zeros((RADIX_BINS,), tl.int32)
    for tile in range(tl.program_id(0), n_tiles, tl.num_programs(0)):
        offs = tl.cast(tile, tl.int64) * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(values_ptr + offs, mask=offs < n, other=float("nan"))
        key = _order_key(v)
        if INDEX_PASS:
            match = (
                (v == v) & (key == prefix) & ((offs >> (SHIFT + RADIX_BITS)) == (index_prefix >> (SHIFT + RADIX_BITS)))
            )
            digit = (offs >> SHIFT) & (RADIX_BINS - 1)
        else:
            match = (v == v) & ((key >> (SHIFT + RADIX_BITS)) == (prefix >> (SHIFT + RADIX_BITS)))
            digit = (key >> SHIFT) & (RADIX_BINS - 1)
        hist += tl.histogram(digit.to(tl.int32), RADIX_BINS, mask=match)
    tl.atomic_add(hist_ptr + tl.arange(0, RADIX_BINS), hist.to(tl.int64))


@triton.jit
def radix_pick_kernel(
    hist_ptr,
    state_ptr,
    budget,
    SHIFT: tl.constexpr,
    FIRST: tl.constexpr,
    LAST_VALUE_PASS: tl.constexpr,
    INDEX_PASS: tl.constexpr,
    HAS_THRESH: tl.constexpr,
):
    """One program: the bin that holds the k-th smallest candidate (0-based), k reduced by the
    candidates below it. The first pass sets k from the count (mmseg's rule); the last value
    pass (without a threshold) decides how the ties at the cut are kept."""
    bins = tl.arange(0, RADIX_BINS)
    hist = tl.load(hist_ptr + bins).to(tl.int64)
    if FIRST:
        count = tl.sum(hist)
        if HAS_THRESH:
            k = tl.minimum(tl.maximum(count - 1, 0), budget)  # cutoff = sorted(p)[min(budget, count - 1)]
        else:
            k = tl.maximum(count - budget, 0)  # the budget largest are above the k-th smallest
        tl.store(state_ptr + COUNT, count)
        tl.store(state_ptr + K0, k)
    else:
        k = tl.load(state_ptr + K)
    below_or_at = tl.cumsum(hist, 0)
    chosen = tl.minimum(tl.sum((below_or_at <= k).to(tl.int64)), RADIX_BINS - 1)
    below = tl.sum(tl.where(bins < chosen, hist, 0))
    at = tl.sum(tl.where(bins == chosen, hist, 0))
    k -= below
    tl.store(state_ptr + K, k)
    if INDEX_PASS:
        tl.store(state_ptr + INDEX_PREFIX, tl.load(state_ptr + INDEX_PREFIX) | (chosen << SHIFT))
    else:
        tl.store(state_ptr + PREFIX, tl.load(state_ptr + PREFIX) | (chosen << SHIFT))
    if LAST_VALUE_PASS and not HAS_THRESH:
        count, k0 = tl.load(state_ptr + COUNT), tl.load(state_ptr + K0)
        # `at` values equal the cut; k0 - k are below it, the rest above. `need` of the ties fit.
        need = budget - (count - (k0 - k) - at)
        # (budget 0: k0 = count is past the last candidate, every pass picks bin 255 and the cut's
        # key, 2^32 - 1, is a NaN's: no candidate is above or equal to it, none is kept)
        tl.store(state_ptr + MODE, tl.where(need >= at, TIES_ALL, TIES_BY_INDEX))
        tl.store(state_ptr + K, need - 1)  # the index passes look for the need-th lowest index


@triton.jit
def _kept(v, offs, state_ptr, thresh, HAS_THRESH: tl.constexpr):
    """mmseg's kept rule given the selection state; False for NaN (not a candidate)."""
    prefix = tl.load(state_ptr + PREFIX)
    if HAS_THRESH:
        return v < tl.maximum(_from_key(prefix), thresh)  # strict: ties at the threshold are dropped
    # the last tie kept as a scalar bound (block & scalar-bool mixes miscompute under the
    # interpreter, triton 3.8)
    last_tie = tl.where(tl.load(state_ptr + MODE) == TIES_ALL, 1 << 62, tl.load(state_ptr + INDEX_PREFIX))
    key = _order_key(v)
    return (v == v) & ((key > prefix) | ((key == prefix) & (offs <= last_tie)))


@triton.jit
def radix_kept_kernel(values_ptr, kept_ptr, state_ptr, n, thresh, HAS_THRESH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(values_ptr + offs, mask=offs < n, other=float("nan"))
    tl.store(kept_ptr + offs, _kept(v, offs, state_ptr, thresh, HAS_THRESH).to(tl.uint8), mask=offs < n)


@triton.jit
def ohem_finish_kernel(
    target_ptr,
    nll_ptr,
    prob_ptr,
    class_weight_ptr,
    state_ptr,
    loss_ptr,
    scale_ptr,
    n_pixels,
    ignore_index,
    thresh,
    denominator,
    HAS_CLASS_WEIGHT: tl.constexpr,
    HAS_THRESH: tl.constexpr,
    AVG_NON_IGNORE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """loss = kept nll / denominator (NaN for non-finite pixels); scale = d loss / d nll."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    in_range = offs < n_pixels
    target = tl.load(target_ptr + offs, mask=in_range, other=0).to(tl.int64)
    valid = in_range & (target != ignore_index)
    nll = tl.load(nll_ptr + offs, mask=in_range, other=0.0)
    if HAS_THRESH:
        kept = valid & _kept(
            tl.load(prob_ptr + offs, mask=in_range, other=float("nan")), offs, state_ptr, thresh, HAS_THRESH
        )
    else:
        kept = valid & _kept(nll, offs, state_ptr, thresh, HAS_THRESH)
    nonfinite = valid & (nll != nll)  # the forward marks ignored and non-finite pixels NaN
    if AVG_NON_IGNORE:
        denominator = tl.load(state_ptr + VALID).to(tl.float32) + 1.1920928955078125e-07  # + float32 eps, as mmseg
    weight = 1.0
    if HAS_CLASS_WEIGHT:
        weight = tl.load(class_weight_ptr + tl.where(kept, target, 0), mask=kept, other=0.0)
    tl.store(loss_ptr + offs, tl.where(kept, nll, tl.where(nonfinite, float("nan"), 0.0)) / denominator, mask=in_range)
    tl.store(
        scale_ptr + offs, tl.where(kept, weight, tl.where(nonfinite, float("nan"), 0.0)) / denominator, mask=in_range
    )


@triton.jit
def ohem_backward_kernel(
    grad_ptr,
    logits_ptr,
    target_ptr,
    lse_ptr,
    scale_ptr,
    n_pixels,
    n_classes,
    spatial,
    stride_n,
    stride_c,
    stride_s,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    q = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    in_range = q < n_pixels
    base = (q // spatial) * stride_n + (q % spatial) * stride_s
    scale = tl.load(scale_ptr + q, mask=in_range, other=0.0)
    active = in_range & (scale != 0.0)  # NaN (a non-finite pixel) is active
    lse = tl.load(lse_ptr + q, mask=active, other=0.0)
    target = tl.load(target_ptr + q, mask=active, other=-1).to(tl.int64)
    for c0 in range(0, n_classes, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        offs = base[:, None] + c[None, :].to(tl.int64) * stride_c
        in_tile = in_range[:, None] & (c[None, :] < n_classes)
        x = tl.load(logits_ptr + offs, mask=active[:, None] & (c[None, :] < n_classes), other=0.0).to(tl.float32)
        soft = tl.exp(x - lse[:, None])
        onehot = tl.where(c[None, :] == target[:, None], 1.0, 0.0)
        grad = tl.where(active[:, None], (soft - onehot) * scale[:, None], 0.0)
        tl.store(grad_ptr + offs, grad.to(grad_ptr.dtype.element_ty), mask=in_tile)
