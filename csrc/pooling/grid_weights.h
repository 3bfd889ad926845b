// Mask-to-grid weights for mask pooling. A mask M (H x W bits) becomes the h x w grid
// W = Ry M Rx^T, where Ry (h x H) and Rx (w x W) are separable resampling matrices (area,
// antialiased bilinear, or LLM-Seg's composed resize/upsample). Row i of Ry / Rx is non-zero
// only on the band [start_i, start_i + count_i); its weights are stored zero-padded to a common
// length. Computed straight from packed bits: no dense or float copy of the mask.
#pragma once

#include <cstdint>

#include "common/bits.h"

namespace segfast {

struct GridWeightsParams {
  const uint64_t* masks = nullptr;  // (n, height, row_words) packed bits
  int64_t n = 0, height = 0, width = 0, row_words = 0;
  int64_t out_h = 0, out_w = 0;
  const int64_t* row_start = nullptr;    // (out_h,) first mask row of each grid row's band
  const int64_t* row_count = nullptr;    // (out_h,) rows in the band (inside the mask)
  const float* row_weights = nullptr;    // (out_h, row_len)
  int64_t row_len = 0;                   // >= every row_count
  const int64_t* col_start = nullptr;    // (out_w,)
  const int64_t* col_count = nullptr;    // (out_w,)
  const float* col_weights = nullptr;    // (out_w, col_len)
  const uint8_t* col_uniform = nullptr;  // (out_w,) 1 when a band's weights are all equal
  int64_t col_len = 0;
  float* out = nullptr;  // (n, out_h, out_w)
};

// Entry j of T = M Rx^T for one packed mask row: the band weights of column band j summed over
// the row's set bits (a popcount when the band is uniform). Shared by the CPU and CUDA kernels.
SEGFAST_HD float band_sum(const GridWeightsParams& p, const uint64_t* row, int64_t j) {
  const int64_t start = p.col_start[j], count = p.col_count[j];
  const float* wts = p.col_weights + j * p.col_len;
  float sum = 0.f;
  for (int64_t off = 0; off < count; off += 64) {
    uint64_t bits = bit_window(row, p.row_words, start + off, min_of<int64_t>(64, count - off));
    if (p.col_uniform[j]) {
      sum += wts[0] * (float)popcount64(bits);
      continue;
    }
    while (bits) {
      sum += wts[off + lowest_bit64(bits)];
      bits &= bits - 1;
    }
  }
  return sum;
}

void grid_weights_cpu(const GridWeightsParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
int grid_weights_cuda_launch(const GridWeightsParams& p, void* stream);
int64_t grid_weights_cuda_max_band();  // longest row band (row_len) the CUDA kernel takes
#endif

}  // namespace segfast
