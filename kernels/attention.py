"""Triton kernels of masked attention (segfast.ops.masked_attention), FlashAttention-2 style.

The mask is packed bits, True = may attend, contiguous (B, Hm, Lq, n_words) int64 with Hm = H
or 1 (shared by the heads; head h reads mask head h % Hm): key j is bit j % 64 of word j // 64.
E (empty rows), the plans and their counts are laid out per (batch, mask head) the same way.
Key blocks are BLOCK_N = 64 keys, so a tile's mask is one word per query row, loaded once.
`empty` flags rows without any allowed key; with UNMASK_EMPTY they attend everywhere
(Mask2Former's rule), otherwise they output 0 (lse = +inf so every probability is 0).

Tile skipping without a branch in the hot loop: a plan kernel lists, per (batch, mask head,
query block), the key blocks holding any allowed key (and writes `empty`); the forward and dQ
kernels loop over that list only, so the loop has no data-dependent branch and the compiler can
software-pipeline its loads. The dK/dV kernel loops over the transposed list (per key block, the
query blocks), made by a second plan kernel in the backward.

Programs: one 1-D grid of (blocks x B x H) programs, B*H on axis 0 (up to 2^31 - 1; axes 1 and 2
stop at 65535). All offsets are int64 (`_split_program` and `_tile_offsets`), since tensors can
pass 2^31 elements. Launch configurations (warps, pipeline stages) are autotuned per (Lk, head
dim) when compiled; under TRITON_INTERPRET=1 there is nothing to tune.

Covered on the CPU: all arithmetic, masking, the plans, strides, the int64 offset helpers and
the grid, against the float64 reference (TRITON_INTERPRET=1, tests/ops/test_attention.py); that
each kernel compiles for sm_90 and its loop is software-pipelined (tests/ops/test_triton_compile.py).
Only a GPU run checks: the compiled code's results, bf16 tensor-core products (the interpreter
computes bf16 dots in fp32, see _dot), the autotuned configurations, and speed.
"""

import os

import triton
import triton.language as tl

BLOCK_M, BLOCK_N = tl.constexpr(64), tl.constexpr(64)  # query rows, keys per tile (BLOCK_N: one mask word)
PLAN_WORDS = tl.constexpr(64)  # mask words a plan program reads per step


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    # UPCAST_DOT: the Triton interpreter multiplies bf16 wrongly (tested with triton 3.8), so the
    # wrapper asks for fp32 operands there; compiled kernels keep bf16 tensor-core products.
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _split_program(pid, n_blocks, H):
    """Program id -> (block, batch, head, batch * H + head), int64; block varies fastest, so the
    programs of one (batch, head) run side by side and share its K and V in L2."""
    pid = pid.to(tl.int64)
    bh = pid // n_blocks
    return pid % n_blocks, bh // H, bh % H, bh


@triton.jit
def _tile_offsets(b, h, sb, sh, sn, rows, cols):
    """int64 element offsets of rows x cols of slice (b, h) of a (B, H, L, D) tensor whose last
    dimension has unit stride."""
    return b.to(tl.int64) * sb + h.to(tl.int64) * sh + rows.to(tl.int64)[:, None] * sn + cols[None, :]


@triton.jit
def _load_tile(ptr, b, h, sb, sh, sn, rows, cols, n):
    """Rows `rows` (< n) of one (batch, head) slice; zeros past n."""
    return tl.load(ptr + _tile_offsets(b, h, sb, sh, sn, rows, cols), mask=(rows < n)[:, None], other=0.0)


@triton.jit
def _store_tile(ptr, value, b, h, sb, sh, sn, rows, cols, n):
    tl.store(
        ptr + _tile_offsets(b, h, sb, sh, sn, rows, cols), value.to(ptr.dtype.element_ty), mask=(rows < n)[:, None]
    )


@triton.jit
def _tail_bits(word_index, Lk):
    """The bits of mask word `word_index` that are keys (< Lk): padding bits never count."""
    left = tl.minimum(tl.maximum(Lk - word_index.to(tl.int64) * 64, 0), 64)
    return tl.where(left >= 64, -1, (tl.full(left.shape, 1, tl.int64) << tl.minimum(left, 63)) - 1)


@triton.jit
def _allowed(mask_rows, n_words, empty, offs_m, kb, Lq, Lk, UNMASK_EMPTY: tl.constexpr):
    """(BLOCK_M, 64) may-attend bits of key block kb: one word per row, expanded in registers."""
    row_ok = offs_m < Lq
    word = tl.load(mask_rows + offs_m.to(tl.int64) * n_words + kb, mask=row_ok, other=0)
    bit = tl.arange(0, BLOCK_N)
    bits = ((word[:, None] >> bit[None, :].to(tl.int64)) & 1) != 0
    if UNMASK_EMPTY:
        bits = bits | (empty[:, None] != 0)
    return bits & row_ok[:, None] & ((kb * BLOCK_N + bit) < Lk)[None, :]


@triton.jit
def attention_plan_kernel(M, E, Blocks, Counts, Hm, Lq, Lk, n_q_blocks, n_words, UNMASK_EMPTY: tl.constexpr):
    """Per (batch, mask head, query block): the key blocks with any allowed key, ascending, into
    Blocks (B, Hm, n_q_blocks, n_words) and their number into Counts; each row's `empty` flag into
    E (B, Hm, Lq). With UNMASK_EMPTY a block with an empty row needs every key block."""
    qb, b, hm, bhm = _split_program(tl.program_id(0), n_q_blocks, Hm)
    rows = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < Lq
    mask_rows = M + (bhm * Lq + rows.to(tl.int64))[:, None] * n_words
    out = Blocks + (bhm * n_q_blocks + qb) * n_words
    row_any = tl.zeros((BLOCK_M,), tl.int32)
    count = tl.zeros((), tl.int32)
    for w0 in range(0, n_words, PLAN_WORDS):
        cols = w0 + tl.arange(0, PLAN_WORDS)
        words = tl.load(mask_rows + cols[None, :], mask=row_ok[:, None] & (cols < n_words)[None, :], other=0)
        hit = ((words & _tail_bits(cols, Lk)[None, :]) != 0).to(tl.int32)
        row_any = tl.maximum(row_any, tl.max(hit, axis=1))
        col_any = tl.max(hit, axis=0)
        tl.store(out + count + tl.cumsum(col_any, 0) - 1, cols, mask=col_any != 0)  # compacted, in order
        count += tl.sum(col_any)
    empty = row_ok & (row_any == 0)
    tl.store(E + bhm * Lq + rows, empty.to(tl.uint8), mask=row_ok)
    if UNMASK_EMPTY:
        every = tl.max(empty.to(tl.int32)) > 0
        for w0 in range(0, tl.where(every, n_words, 0), PLAN_WORDS):
            cols = w0 + tl.arange(0, PLAN_WORDS)
            tl.store(out + cols, cols, mask=cols < n_words)
        count = tl.where(every, n_words, count)
    tl.store(Counts + bhm * n_q_blocks + qb, count)


@triton.jit
def attention_plan_by_key_kernel(M, E, Blocks, Counts, Hm, Lq, Lk, n_q_blocks, n_words, UNMASK_EMPTY: tl.constexpr):
    """The transposed plan, for dK/dV: per (batch, mask head, key block) the query blocks with
    any allowed key in it, into Blocks (B, Hm, n_words, n_q_blocks) and Counts (B, Hm, n_words)."""
    kb, b, hm, bhm = _split_program(tl.program_id(0), n_words, Hm)
    tail = _tail_bits(kb, Lk)
    out = Blocks + (bhm * n_words + kb) * n_q_blocks
    count = tl.zeros((), tl.int32)
    for qb in range(0, n_q_blocks):
        rows = qb * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < Lq
        words = tl.load(M + (bhm * Lq + rows.to(tl.int64)) * n_words + kb, mask=row_ok, other=0)
        hit = (words & tail) != 0
        if UNMASK_EMPTY:
            hit = hit | (tl.load(E + bhm * Lq + rows, mask=row_ok, other=0) != 0)
        any_hit = tl.max(hit.to(tl.int32))
        tl.store(out + count, qb, mask=any_hit != 0)
        count += any_hit
    tl.store(Counts + bhm * n_words + kb, count)


def _autotuned(kernel):
    """A few launch configurations, tuned once per (Lk, head dim); the tile sizes stay fixed since
    the plans are laid out in them. Nothing to tune in the interpreter."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return kernel
    configs = [triton.Config({}, num_warps=w, num_stages=s) for w in (4, 8) for s in (2, 3)]
    return triton.autotune(configs=configs, key=["Lk", "BLOCK_D"])(kernel)


@triton.jit
def _probs_and_grads(q, k, v, do, lse, delta, allowed, scale, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Backward tile: probabilities recomputed from the saved logsumexp, and dS = P * (dP - delta)."""
    s = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST_DOT) * scale
    p = tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)
    dp = _dot(do, tl.trans(v), DOT_PRECISION, UPCAST_DOT)
    return p, p * (dp - delta[:, None])


@_autotuned
@triton.jit
def attention_forward_kernel(
    Q,
    K,
    V,
    M,
    E,
    Out,
    Lse,
    Blocks,
    Counts,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sob,
    soh,
    som,
    H,
    Hm,
    Lq,
    Lk,
    n_q_blocks,
    n_words,
    scale,
    UNMASK_EMPTY: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Out and logsumexp of one query block, over the key blocks its plan lists."""
    qb, b, h, bh = _split_program(tl.program_id(0), n_q_blocks, H)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    q = _load_tile(Q, b, h, sqb, sqh, sqm, offs_m, offs_d, Lq)
    bhm = b * Hm + h % Hm  # the mask head
    mask_rows = M + bhm * Lq * n_words
    empty = tl.load(E + bhm * Lq + offs_m, mask=row_ok, other=0)
    plan_block = bhm * n_q_blocks + qb
    blocks = Blocks + plan_block * n_words
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for i in range(0, tl.load(Counts + plan_block)):
        kb = tl.load(blocks + i).to(tl.int64)
        allowed = _allowed(mask_rows, n_words, empty, offs_m, kb, Lq, Lk, UNMASK_EMPTY)
        k = _load_tile(K, b, h, skb, skh, skn, kb * BLOCK_N + offs_n, offs_d, Lk)
        s = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST_DOT) * scale
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - m_safe[:, None])
        alpha = tl.exp(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = _load_tile(V, b, h, svb, svh, svn, kb * BLOCK_N + offs_n, offs_d, Lk)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION, UPCAST_DOT)
        m_i = m_new
    has_mass = l_i > 0
    out = acc / tl.where(has_mass, l_i, 1.0)[:, None]
    lse = tl.where(has_mass, m_i + tl.log(tl.where(has_mass, l_i, 1.0)), float("inf"))
    _store_tile(Out, out, b, h, sob, soh, som, offs_m, offs_d, Lq)
    tl.store(Lse + bh * Lq + offs_m, lse, mask=row_ok)


@_autotuned
@triton.jit
def attention_backward_kv_kernel(
    Q,
    K,
    V,
    M,
    E,
    DO,
    Lse,
    Delta,
    DK,
    DV,
    Blocks,
    Counts,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sdob,
    sdoh,
    sdom,
    sdkb,
    sdkh,
    sdkn,
    sdvb,
    sdvh,
    sdvn,
    H,
    Hm,
    Lq,
    Lk,
    n_q_blocks,
    n_words,
    scale,
    UNMASK_EMPTY: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dK and dV of one key block, over the query blocks the transposed plan lists."""
    kb, b, h, bh = _split_program(tl.program_id(0), n_words, H)
    offs_n = kb * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load_tile(K, b, h, skb, skh, skn, offs_n, offs_d, Lk)
    v = _load_tile(V, b, h, svb, svh, svn, offs_n, offs_d, Lk)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    bhm = b * Hm + h % Hm
    mask_rows = M + bhm * Lq * n_words
    plan_block = bhm * n_words + kb
    blocks = Blocks + plan_block * n_q_blocks
    for i in range(0, tl.load(Counts + plan_block)):
        offs_m = tl.load(blocks + i).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Lq
        empty = tl.load(E + bhm * Lq + offs_m, mask=row_ok, other=0)
        allowed = _allowed(mask_rows, n_words, empty, offs_m, kb, Lq, Lk, UNMASK_EMPTY)
        q = _load_tile(Q, b, h, sqb, sqh, sqm, offs_m, offs_d, Lq)
        do = _load_tile(DO, b, h, sdob, sdoh, sdom, offs_m, offs_d, Lq)
        lse = tl.load(Lse + bh * Lq + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(Delta + bh * Lq + offs_m, mask=row_ok, other=0.0)
        p, ds = _probs_and_grads(q, k, v, do, lse, delta, allowed, scale, DOT_PRECISION, UPCAST_DOT)
        dv += _dot(tl.trans(p.to(do.dtype)), do, DOT_PRECISION, UPCAST_DOT)
        dk += _dot(tl.trans(ds.to(q.dtype)), q, DOT_PRECISION, UPCAST_DOT)
    _store_tile(DK, dk * scale, b, h, sdkb, sdkh, sdkn, offs_n, offs_d, Lk)
    _store_tile(DV, dv, b, h, sdvb, sdvh, sdvn, offs_n, offs_d, Lk)


@_autotuned
@triton.jit
def attention_backward_q_kernel(
    Q,
    K,
    V,
    M,
    E,
    DO,
    Lse,
    Delta,
    DQ,
    Blocks,
    Counts,
    sqb,
    sqh,
    sqm,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sdob,
    sdoh,
    sdom,
    sdqb,
    sdqh,
    sdqm,
    H,
    Hm,
    Lq,
    Lk,
    n_q_blocks,
    n_words,
    scale,
    UNMASK_EMPTY: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dQ of one query block, over the key blocks its plan lists (the forward's plan)."""
    qb, b, h, bh = _split_program(tl.program_id(0), n_q_blocks, H)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    q = _load_tile(Q, b, h, sqb, sqh, sqm, offs_m, offs_d, Lq)
    do = _load_tile(DO, b, h, sdob, sdoh, sdom, offs_m, offs_d, Lq)
    lse = tl.load(Lse + bh * Lq + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(Delta + bh * Lq + offs_m, mask=row_ok, other=0.0)
    bhm = b * Hm + h % Hm
    mask_rows = M + bhm * Lq * n_words
    empty = tl.load(E + bhm * Lq + offs_m, mask=row_ok, other=0)
    plan_block = bhm * n_q_blocks + qb
    blocks = Blocks + plan_block * n_words
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for i in range(0, tl.load(Counts + plan_block)):
        kb = tl.load(blocks + i).to(tl.int64)
        allowed = _allowed(mask_rows, n_words, empty, offs_m, kb, Lq, Lk, UNMASK_EMPTY)
        k = _load_tile(K, b, h, skb, skh, skn, kb * BLOCK_N + offs_n, offs_d, Lk)
        v = _load_tile(V, b, h, svb, svh, svn, kb * BLOCK_N + offs_n, offs_d, Lk)
        _, ds = _probs_and_grads(q, k, v, do, lse, delta, allowed, scale, DOT_PRECISION, UPCAST_DOT)
        dq += _dot(ds.to(k.dtype), k, DOT_PRECISION, UPCAST_DOT)
    _store_tile(DQ, dq * scale, b, h, sdqb, sdqh, sdqm, offs_m, offs_d, Lq)
