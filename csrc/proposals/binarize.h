// Fused post-processing of mask logits (SAM everything mode): one pass over each logit map
// thresholds it into packed bits on a larger canvas (the crop's place in the image), counts the
// pixels above threshold + offset, threshold - offset and threshold (stability score and
// area), and finds the mask's box. Torch-free.
//
// Both kernels reduce per canvas row to a MaskStats and fold the rows with merge_stats, then
// finish_stats writes counts and box: the helpers below are the whole counting and box logic,
// shared by the CPU and CUDA kernels, so the CPU tests check what the GPU computes. Each count
// is folded on its own: with a negative stability offset the "> lo" count can be zero while the
// others are not.
#pragma once

#include <climits>
#include <cstdint>

#include "common/hd.h"

namespace segfast {

struct BinarizeParams {
  const float* logits = nullptr;  // (n, h, w)
  uint8_t* packed = nullptr;      // (n, height, 8 * row_words), bits where logit > mid
  int32_t* counts = nullptr;      // (n, 3): > hi, > lo, > mid
  int32_t* boxes = nullptr;       // (n, 4): x0, y0, x1, y1 inclusive, {0, 0, 0, 0} when empty
  int64_t n = 0, h = 0, w = 0;
  int64_t height = 0, width = 0, row_words = 0;  // canvas
  int64_t top = 0, left = 0;                     // where the logit map sits on the canvas
  float hi = 0, lo = 0, mid = 0;
};

// Counts and extent of a set of canvas pixels (a row, then a whole mask). Empty extents are
// {INT_MAX, INT_MAX, -1, -1}, the identity of merge_stats.
struct MaskStats {
  int32_t n_hi, n_lo, n_mid;
  int32_t x0, y0, x1, y1;
};

SEGFAST_HD MaskStats empty_stats() { return {0, 0, 0, INT_MAX, INT_MAX, -1, -1}; }

// Adds pixel (x, y) with logit v.
SEGFAST_HD void add_pixel(MaskStats& s, const BinarizeParams& p, float v, int32_t x, int32_t y) {
  s.n_hi += v > p.hi;
  s.n_lo += v > p.lo;
  if (v > p.mid) {
    s.n_mid += 1;
    s.x0 = min_of(s.x0, x), s.x1 = max_of(s.x1, x);
    s.y0 = min_of(s.y0, y), s.y1 = max_of(s.y1, y);
  }
}

SEGFAST_HD MaskStats merge_stats(const MaskStats& a, const MaskStats& b) {
  return {a.n_hi + b.n_hi,    a.n_lo + b.n_lo,    a.n_mid + b.n_mid, min_of(a.x0, b.x0),
          min_of(a.y0, b.y0), max_of(a.x1, b.x1), max_of(a.y1, b.y1)};
}

// Writes mask m's counts and box (segment-anything's batched_mask_to_box: {0, 0, 0, 0} when empty).
SEGFAST_HD void finish_stats(const BinarizeParams& p, int64_t m, const MaskStats& s) {
  int32_t* c = p.counts + 3 * m;
  c[0] = s.n_hi, c[1] = s.n_lo, c[2] = s.n_mid;
  int32_t* b = p.boxes + 4 * m;
  const bool empty = s.n_mid == 0;
  b[0] = empty ? 0 : s.x0, b[1] = empty ? 0 : s.y0, b[2] = empty ? 0 : s.x1, b[3] = empty ? 0 : s.y1;
}

// CPU: masks [begin, end).
void binarize_masks_cpu(const BinarizeParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
// row_stats: (n, height) MaskStats of scratch space.
int binarize_cuda_launch(const BinarizeParams& p, MaskStats* row_stats, void* stream);
#endif

}  // namespace segfast
