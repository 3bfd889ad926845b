// Mask overlap counts from packed masks: |A_i ∩ B_j| for every pair (pairwise) or for i == j
// (matched). Each mask is `words` 64-bit words (all its packed rows back to back; padding bits
// are zero, so they never count). Everything else (areas, IoU, IoP, NMS, metrics) derives from
// these exact integer counts.
#pragma once

#include <cstdint>

namespace segfast {

struct OverlapParams {
  const uint64_t* a = nullptr;  // (n, words)
  const uint64_t* b = nullptr;  // (m, words)
  int64_t n = 0, m = 0, words = 0;
  int64_t* out = nullptr;       // pairwise: (n, m); matched: (n,)
};

// CPU, pairwise: fills output rows [row_begin, row_end) (any multiple of kOverlapRowBlock apart).
constexpr int64_t kOverlapRowBlock = 16;
void overlap_pairwise_cpu(const OverlapParams& p, int64_t row_begin, int64_t row_end);
void overlap_matched_cpu(const OverlapParams& p, int64_t begin, int64_t end);
const char* overlap_cpu_isa();  // which popcount the CPU kernels use on this machine

#if defined(SEGFAST_WITH_CUDA)
int overlap_pairwise_cuda_launch(const OverlapParams& p, void* stream);
int overlap_matched_cuda_launch(const OverlapParams& p, void* stream);
#endif

}  // namespace segfast
