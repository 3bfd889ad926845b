"""Triton kernels of masked attention (segfast.ops.masked_attention), FlashAttention-2 style.

The mask is packed bits, True = may attend: row q of batch b (and head h, or shared by all heads
with a head stride of 0) is `row_words` int64 words, key j being bit j % 64 of word j // 64.
`empty` flags rows without any allowed key; with UNMASK_EMPTY they attend everywhere
(Mask2Former's rule), otherwise they output 0 (lse = +inf so every probability is 0).
Tiles whose mask bits are all zero are skipped: neither K nor V is loaded for them.
"""

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    # UPCAST_DOT: the Triton interpreter multiplies bf16 wrongly (tested with triton 3.8), so the
    # wrapper asks for fp32 operands there; compiled kernels keep bf16 tensor-core products.
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _allowed(mask_ptr, row_stride, empty, offs_m, offs_n, Lq, Lk, UNMASK_EMPTY: tl.constexpr):
    inside = (offs_m[:, None] < Lq) & (offs_n[None, :] < Lk)
    words = tl.load(mask_ptr + offs_m[:, None].to(tl.int64) * row_stride + (offs_n[None, :] >> 6), mask=inside, other=0)
    bits = ((words >> (offs_n[None, :] & 63).to(tl.int64)) & 1) != 0
    if UNMASK_EMPTY:
        bits = bits | (empty[:, None] != 0)
    return bits & inside


@triton.jit
def _load_tile(ptr, b, h, sb, sh, sn, offs, offs_d, n):
    """Rows `offs` (< n) of one (batch, head) slice of a (B, H, L, D) tensor; zeros past n."""
    return tl.load(ptr + b * sb + h * sh + offs[:, None] * sn + offs_d[None, :], mask=(offs < n)[:, None], other=0.0)


@triton.jit
def _load_query_rows(Q, DO, Lse, Delta, b, h, pid_bh, sqb, sqh, sqm, offs_m, offs_d, Lq):
    """What a backward tile needs per query row: q, dO (q's strides), logsumexp and delta."""
    row_ok = offs_m < Lq
    q = _load_tile(Q, b, h, sqb, sqh, sqm, offs_m, offs_d, Lq)
    do = _load_tile(DO, b, h, sqb, sqh, sqm, offs_m, offs_d, Lq)
    lse = tl.load(Lse + pid_bh * Lq + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(Delta + pid_bh * Lq + offs_m, mask=row_ok, other=0.0)
    return q, do, lse, delta


@triton.jit
def _probs_and_grads(q, k, v, do, lse, delta, allowed, scale, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Backward tile: probabilities recomputed from the saved logsumexp, and dS = P * (dP - delta)."""
    s = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST_DOT) * scale
    p = tl.where(allowed, tl.exp(s - lse[:, None]), 0.0)
    dp = _dot(do, tl.trans(v), DOT_PRECISION, UPCAST_DOT)
    return p, p * (dp - delta[:, None])


@triton.jit
def attention_forward_kernel(Q, K, V, M, E, Out, Lse,
                             sqb, sqh, sqm, skb, skh, skn, svb, svh, svn, sob, soh, som,
                             smb, smh, smm, seb, seh, H, Lq, Lk, scale,
                             UNMASK_EMPTY: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    q = _load_tile(Q, b, h, sqb, sqh, sqm, offs_m, offs_d, Lq)
    mask_base = M + b * smb + h * smh
    empty = tl.load(E + b * seb + h * seh + offs_m, mask=row_ok, other=0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        allowed = _allowed(mask_base, smm, empty, offs_m, offs_n, Lq, Lk, UNMASK_EMPTY)
        if tl.max(allowed.to(tl.int32)) > 0:
            k = _load_tile(K, b, h, skb, skh, skn, offs_n, offs_d, Lk)
            s = _dot(q, tl.trans(k), DOT_PRECISION, UPCAST_DOT) * scale
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = _load_tile(V, b, h, svb, svh, svn, offs_n, offs_d, Lk)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION, UPCAST_DOT)
            m_i = m_new
    has_mass = l_i > 0
    out = acc / tl.where(has_mass, l_i, 1.0)[:, None]
    lse = tl.where(has_mass, m_i + tl.log(tl.where(has_mass, l_i, 1.0)), float("inf"))
    tl.store(Out + b * sob + h * soh + offs_m[:, None] * som + offs_d[None, :], out.to(Out.dtype.element_ty), mask=row_ok[:, None])
    tl.store(Lse + pid_bh * Lq + offs_m, lse, mask=row_ok)


@triton.jit
def attention_backward_kv_kernel(Q, K, V, M, E, DO, Lse, Delta, DK, DV,
                                 sqb, sqh, sqm, skb, skh, skn, svb, svh, svn,
                                 smb, smh, smm, seb, seh, H, Lq, Lk, scale,
                                 UNMASK_EMPTY: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """dK and dV for one block of keys, looping over query blocks (q, dO share q's strides)."""
    pid_n, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    k = _load_tile(K, b, h, skb, skh, skn, offs_n, offs_d, Lk)
    v = _load_tile(V, b, h, svb, svh, svn, offs_n, offs_d, Lk)
    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    mask_base = M + b * smb + h * smh
    for start_m in range(0, Lq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Lq
        empty = tl.load(E + b * seb + h * seh + offs_m, mask=row_ok, other=0)
        allowed = _allowed(mask_base, smm, empty, offs_m, offs_n, Lq, Lk, UNMASK_EMPTY)
        if tl.max(allowed.to(tl.int32)) > 0:
            q, do, lse, delta = _load_query_rows(Q, DO, Lse, Delta, b, h, pid_bh, sqb, sqh, sqm, offs_m, offs_d, Lq)
            p, ds = _probs_and_grads(q, k, v, do, lse, delta, allowed, scale, DOT_PRECISION, UPCAST_DOT)
            dv += _dot(tl.trans(p.to(do.dtype)), do, DOT_PRECISION, UPCAST_DOT)
            dk += _dot(tl.trans(ds.to(q.dtype)), q, DOT_PRECISION, UPCAST_DOT)
    key_ok = (offs_n < Lk)[:, None]
    tl.store(DK + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
             mask=key_ok)  # dK is allocated like k, dV like v
    tl.store(DV + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=key_ok)


@triton.jit
def attention_backward_q_kernel(Q, K, V, M, E, DO, Lse, Delta, DQ,
                                sqb, sqh, sqm, skb, skh, skn, svb, svh, svn,
                                smb, smh, smm, seb, seh, H, Lq, Lk, scale,
                                UNMASK_EMPTY: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST_DOT: tl.constexpr,
                                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """dQ for one block of queries, looping over key blocks."""
    pid_m, pid_bh = tl.program_id(0), tl.program_id(1)
    b, h = pid_bh // H, pid_bh % H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < Lq
    q, do, lse, delta = _load_query_rows(Q, DO, Lse, Delta, b, h, pid_bh, sqb, sqh, sqm, offs_m, offs_d, Lq)
    empty = tl.load(E + b * seb + h * seh + offs_m, mask=row_ok, other=0)
    mask_base = M + b * smb + h * smh
    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start_n in range(0, Lk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        allowed = _allowed(mask_base, smm, empty, offs_m, offs_n, Lq, Lk, UNMASK_EMPTY)
        if tl.max(allowed.to(tl.int32)) > 0:
            k = _load_tile(K, b, h, skb, skh, skn, offs_n, offs_d, Lk)
            v = _load_tile(V, b, h, svb, svh, svn, offs_n, offs_d, Lk)
            _, ds = _probs_and_grads(q, k, v, do, lse, delta, allowed, scale, DOT_PRECISION, UPCAST_DOT)
            dq += _dot(ds.to(k.dtype), k, DOT_PRECISION, UPCAST_DOT)
    tl.store(DQ + b * sqb + h * sqh + offs_m[:, None] * sqm + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])
