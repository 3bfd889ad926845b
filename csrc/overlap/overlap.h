// Mask overlap counts from packed masks: |A_i ∩ B_j| for every pair (pairwise) or for i == j
// (matched). Each mask is `words` 64-bit words (all its packed rows back to back; padding bits
// are zero, so they never count). Everything else (areas, IoU, IoP, NMS, metrics) derives from
// these exact integer counts.
#pragma once

#include <cstdint>

#include "common/bits.h"

namespace segfast {

// One word of the popcount GEMM's multiply-add for a 4x4 block of pairs:
// acc[i][j] += popcount(a[i] & b[j]). Shared by the CPU and CUDA kernels.
template <typename Acc>
SEGFAST_HD void popcount_block4x4(const uint64_t a[4], const uint64_t b[4], Acc acc[4][4]) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < 4; ++i)
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int j = 0; j < 4; ++j) acc[i][j] += (Acc)popcount64(a[i] & b[j]);
}

// How many splits of the words the CUDA pairwise kernel runs in (grid z, split-K): enough
// blocks for two per SM when there are few 64x64 tiles of pairs, at least `slice` words per
// split, at most 65535 splits, and at most 2^25 words (2^31 bits) per split so that a split's
// 32-bit counts cannot overflow.
SEGFAST_HD int64_t overlap_word_splits(int64_t words, int64_t tiles, int64_t sms, int64_t slice) {
  const int64_t by_sms = (2 * sms + tiles - 1) / tiles;
  const int64_t by_slice = max_of<int64_t>(1, words / slice);
  const int64_t by_overflow = (words + (int64_t{1} << 25) - 1) >> 25;
  return max_of<int64_t>(max_of<int64_t>(1, by_overflow), min_of<int64_t>(min_of<int64_t>(by_sms, by_slice), 65535));
}

struct OverlapParams {
  const uint64_t* a = nullptr;  // (n, words)
  const uint64_t* b = nullptr;  // (m, words)
  int64_t n = 0, m = 0, words = 0;
  int64_t* out = nullptr;  // pairwise: (n, m), zeroed (the CUDA kernel adds to it); matched: (n,)
};

// CPU, pairwise: adds to output rows [row_begin, row_end) (any multiple of kOverlapRowBlock apart).
constexpr int64_t kOverlapRowBlock = 16;
void overlap_pairwise_cpu(const OverlapParams& p, int64_t row_begin, int64_t row_end);
void overlap_matched_cpu(const OverlapParams& p, int64_t begin, int64_t end);
const char* overlap_cpu_isa();  // which popcount the CPU kernels use on this machine

#if defined(SEGFAST_WITH_CUDA)
int overlap_pairwise_cuda_launch(const OverlapParams& p, void* stream);
int overlap_matched_cuda_launch(const OverlapParams& p, void* stream);
#endif

}  // namespace segfast
