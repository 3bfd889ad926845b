// Mask-to-grid weights for mask pooling. A mask M (H x W bits) becomes the h x w grid
// W = Ry M Rx^T, where Ry (h x H) and Rx (w x W) are separable resampling matrices (area,
// antialiased bilinear, or LLM-Seg's composed resize/upsample). Each row of Ry / Rx is non-zero
// on a contiguous band only, stored as (start, band weights); bands are zero-padded to a common
// length. Computed straight from packed bits: no dense or float copy of the mask.
#pragma once

#include <cstdint>

#include "common/hd.h"

namespace segfast {

struct GridWeightsParams {
  const uint64_t* masks = nullptr;  // (n, height, row_words) packed bits
  int64_t n = 0, height = 0, width = 0, row_words = 0;
  int64_t out_h = 0, out_w = 0;
  const int64_t* row_start = nullptr;  // (out_h,) first mask row of each grid row's band
  const float* row_weights = nullptr;  // (out_h, row_len)
  int64_t row_len = 0;
  const int64_t* col_start = nullptr;  // (out_w,)
  const float* col_weights = nullptr;  // (out_w, col_len)
  const uint8_t* col_uniform = nullptr; // (out_w,) 1 when a band's in-image weights are all equal
  int64_t col_len = 0;
  float* out = nullptr;                // (n, out_h, out_w)
};

// Bits [start, start + len) of a packed row (len <= 64), as the low bits of a word.
SEGFAST_HD uint64_t bit_window(const uint64_t* row, int64_t row_words, int64_t start, int64_t len) {
  const int64_t word = start / 64, shift = start % 64;
  uint64_t bits = row[word] >> shift;
  if (shift && word + 1 < row_words) bits |= row[word + 1] << (64 - shift);
  return len >= 64 ? bits : bits & ((uint64_t{1} << len) - 1);
}

void grid_weights_cpu(const GridWeightsParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
int grid_weights_cuda_launch(const GridWeightsParams& p, void* stream);
#endif

}  // namespace segfast
