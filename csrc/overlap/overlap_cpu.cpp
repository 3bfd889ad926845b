// CPU overlap counts (torch-free). The pairwise kernel is a GEMM whose multiply-add is
// popcount(a & b) + c: 4x4 register blocks of pairs, a 16-row block of A kept in L1/L2 per
// chunk of words, and B streamed once per row block. AVX-512 VPOPCNTDQ (8 words per
// instruction) when the CPU has it, else the scalar popcnt instruction, else portable code;
// chosen once at run time, so the binary stays baseline x86-64.
#include <algorithm>

#include "overlap/overlap.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SEGFAST_X86 1
#endif

namespace segfast {
namespace {

constexpr int64_t kChunkWords = 512;  // 4 KiB of each mask per pass: 16 A rows + a 4-row B block in L1

// ---- portable / popcnt kernels -------------------------------------------------------------

// Rows past ni / nj repeat the last real row (valid memory); their sums are dropped.
__attribute__((always_inline)) inline void block_scalar(const uint64_t* const* a, const uint64_t* const* b, int ni,
                                                        int nj, int64_t len, int64_t acc[4][4]) {
  int64_t sum[4][4] = {};
  for (int64_t w = 0; w < len; ++w) {
    const uint64_t va[4] = {a[0][w], a[1][w], a[2][w], a[3][w]};
    const uint64_t vb[4] = {b[0][w], b[1][w], b[2][w], b[3][w]};
    popcount_block4x4(va, vb, sum);
  }
  for (int i = 0; i < ni; ++i)
    for (int j = 0; j < nj; ++j) acc[i][j] += sum[i][j];
}

#define SEGFAST_DEFINE_SCALAR(NAME, ATTR)                                                                              \
  ATTR void NAME(const uint64_t* const* a, const uint64_t* const* b, int ni, int nj, int64_t len, int64_t acc[4][4]) { \
    block_scalar(a, b, ni, nj, len, acc);                                                                              \
  }

SEGFAST_DEFINE_SCALAR(block_portable, )
#if defined(SEGFAST_X86)
SEGFAST_DEFINE_SCALAR(block_popcnt, __attribute__((target("popcnt"))))

// ---- AVX-512 VPOPCNTDQ -------------------------------------------------------------------

__attribute__((target("avx512f,avx512vpopcntdq"))) void block_avx512(const uint64_t* const* a, const uint64_t* const* b,
                                                                     int ni, int nj, int64_t len, int64_t acc[4][4]) {
  __m512i sum[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) sum[i][j] = _mm512_setzero_si512();
  for (int64_t w = 0; w < len; w += 8) {
    const __mmask8 lanes = len - w >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (len - w)) - 1);
    __m512i va[4], vb[4];
    // rows past ni / nj repeat the last real row (valid memory); their sums are dropped
    for (int i = 0; i < 4; ++i) va[i] = _mm512_maskz_loadu_epi64(lanes, a[i] + w);
    for (int j = 0; j < 4; ++j) vb[j] = _mm512_maskz_loadu_epi64(lanes, b[j] + w);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        sum[i][j] = _mm512_add_epi64(sum[i][j], _mm512_popcnt_epi64(_mm512_and_si512(va[i], vb[j])));
  }
  for (int i = 0; i < ni; ++i)
    for (int j = 0; j < nj; ++j) acc[i][j] += _mm512_reduce_add_epi64(sum[i][j]);
}
#endif

using BlockFn = void (*)(const uint64_t* const*, const uint64_t* const*, int, int, int64_t, int64_t[4][4]);

struct Isa {
  BlockFn block;
  const char* name;
};

Isa detect() {
#if defined(SEGFAST_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq"))
    return {block_avx512, "avx512-vpopcntdq"};
  if (__builtin_cpu_supports("popcnt")) return {block_popcnt, "popcnt"};
#endif
  return {block_portable, "portable"};
}

const Isa& isa() {
  static const Isa chosen = detect();
  return chosen;
}

}  // namespace

const char* overlap_cpu_isa() { return isa().name; }

void overlap_pairwise_cpu(const OverlapParams& p, int64_t row_begin, int64_t row_end) {
  const BlockFn block = isa().block;
  for (int64_t w0 = 0; w0 < p.words; w0 += kChunkWords) {
    const int64_t len = std::min(kChunkWords, p.words - w0);
    for (int64_t j0 = 0; j0 < p.m; j0 += 4) {
      const int nj = (int)std::min<int64_t>(4, p.m - j0);
      const uint64_t* b[4];
      for (int j = 0; j < 4; ++j) b[j] = p.b + (j0 + std::min(j, nj - 1)) * p.words + w0;
      for (int64_t i0 = row_begin; i0 < row_end; i0 += 4) {
        const int ni = (int)std::min<int64_t>(4, row_end - i0);
        const uint64_t* a[4];
        for (int i = 0; i < 4; ++i) a[i] = p.a + (i0 + std::min(i, ni - 1)) * p.words + w0;
        int64_t acc[4][4] = {};
        block(a, b, ni, nj, len, acc);
        for (int i = 0; i < ni; ++i)
          for (int j = 0; j < nj; ++j) p.out[(i0 + i) * p.m + j0 + j] += acc[i][j];
      }
    }
  }
}

void overlap_matched_cpu(const OverlapParams& p, int64_t begin, int64_t end) {
  const BlockFn block = isa().block;
  for (int64_t i = begin; i < end; ++i) {
    const uint64_t* ai = p.a + i * p.words;
    const uint64_t* bi = p.b + i * p.words;
    const uint64_t* a[4] = {ai, ai, ai, ai};  // the vector kernel reads all four rows
    const uint64_t* b[4] = {bi, bi, bi, bi};
    int64_t acc[4][4] = {};
    block(a, b, 1, 1, p.words, acc);
    p.out[i] = acc[0][0];
  }
}

}  // namespace segfast
