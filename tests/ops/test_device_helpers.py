"""The __host__ __device__ helpers the CUDA kernels use (csrc/common/bits.h and each op's header),
run on the CPU through the segfast_testing ops and checked against independent PyTorch code:
exhaustively where the input space is small, on fresh random inputs otherwise. The CPU kernels
call the same helpers, so these checks cover what the GPU will run before it ever does."""

import pytest
import torch

import segfast
from segfast.ops import _reference

pytestmark = pytest.mark.skipif(not segfast.build_info()["extension"], reason="segfast._C not built")
T = torch.ops.segfast_testing


def as_uint64(x: torch.Tensor) -> list:
    """int64 tensor holding uint64 bit patterns -> Python ints."""
    return [v & (2**64 - 1) for v in x.tolist()]


def random_words(n, gen):
    return torch.randint(-(2**63), 2**63 - 1, (n,), generator=gen, dtype=torch.int64)


def test_expand16_every_pattern():
    """All 65,536 16-bit patterns, with junk in the upper bits that must not leak (the CUDA
    dense rasterizer's old expand4 let bits 4..15 into neighbouring bytes)."""
    bits = torch.arange(2**16, dtype=torch.int64)
    junk = bits | (torch.randint(0, 2**16, (2**16,), dtype=torch.int64) << 16)
    want = ((bits[:, None] >> torch.arange(16)) & 1).to(torch.uint8)
    assert torch.equal(T.expand16(junk), want)


def test_gather8_every_pattern():
    bools = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).to(torch.uint8)
    assert torch.equal(T.gather8(bools.contiguous()), torch.arange(256))


@pytest.mark.parametrize("bits", [32, 64])
def test_prefix_xor(gen, bits):
    words = random_words(2000, gen)
    if bits == 32:
        words = words & 0xFFFFFFFF
    got = as_uint64(T.prefix_xor(words, bits))
    for w, g in zip(as_uint64(words), got):
        want, parity = 0, 0
        for i in range(bits):
            parity ^= (w >> i) & 1
            want |= parity << i
        assert g == want


def test_valid_bits32_all_small_cases():
    w, width = torch.meshgrid(torch.arange(8), torch.arange(0, 260), indexing="ij")
    got = T.valid_bits32(w.flatten().contiguous(), width.flatten().contiguous())
    n = (width.flatten() - 32 * w.flatten()).clamp(0, 32)
    assert torch.equal(got, (1 << n) - 1)


def test_bit_window(gen):
    row_words = 5
    row = random_words(row_words, gen)
    bits = [(v >> i) & 1 for v in as_uint64(row) for i in range(64)]
    starts = torch.randint(0, 64 * row_words, (3000,), generator=gen)
    lens = torch.minimum(torch.randint(0, 65, (3000,), generator=gen), 64 * row_words - starts)
    got = as_uint64(T.bit_window(row, starts, lens))
    for s, n, g in zip(starts.tolist(), lens.tolist(), got):
        assert g == sum(bits[s + i] << i for i in range(n)), (s, n)


@pytest.mark.parametrize("width", [1, 7, 8, 15, 16, 31, 32, 33, 63, 64, 65, 100, 129])
def test_pack_and_unpack_words(gen, width):
    """The per-word helpers of the CUDA packing kernels (their path for unaligned rows)."""
    dense = torch.rand(9, width, generator=gen) < torch.rand(9, 1, generator=gen)
    packed = T.pack_words(dense)
    assert torch.equal(packed, _reference.pack_masks(dense))  # padding bits and bytes zero too
    assert torch.equal(T.unpack_words(packed, width), dense)


def test_popcount_block(gen):
    for _ in range(200):
        a, b = random_words(4, gen), random_words(4, gen)
        want = [[bin(x & y).count("1") for y in as_uint64(b)] for x in as_uint64(a)]
        assert T.popcount_block(a, b).tolist() == want


def test_overlap_word_splits(gen):
    """Split-K of the CUDA popcount GEMM: at least one split, at most 65535, no 32-bit partial
    count can overflow, and thin problems get enough blocks for every SM."""
    for _ in range(3000):
        words = int(torch.randint(1, 2**28, (1,), generator=gen)) >> int(torch.randint(0, 28, (1,), generator=gen))
        tiles = int(torch.randint(1, 5000, (1,), generator=gen))
        sms = int(torch.randint(1, 200, (1,), generator=gen))
        splits = T.overlap_word_splits(words, tiles, sms, 16)
        per_split = -(-words // splits)
        assert 1 <= splits <= 65535 and per_split * 64 < 2**32
        if words >= 16 * 2 * sms:  # enough words to split: thin problems fill the SMs
            assert tiles * splits >= min(2 * sms, tiles * (words // 16))
    # 100 x 4 masks of 1024^2: two tiles, 16384 words, 132 SMs
    assert 2 * T.overlap_word_splits(16384, 2, 132, 16) >= 2 * 132
