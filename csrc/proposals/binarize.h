// Fused post-processing of mask logits (SAM everything mode): one pass over each logit map
// thresholds it into packed bits on a larger canvas (the crop's place in the image), counts the
// pixels above threshold + offset, threshold - offset and threshold (stability score and
// area), and finds the mask's box. Torch-free.
#pragma once

#include <cstdint>

namespace segfast {

struct BinarizeParams {
  const float* logits = nullptr;  // (n, h, w)
  uint8_t* packed = nullptr;      // (n, height, 8 * row_words), bits where logit > mid
  int32_t* counts = nullptr;      // (n, 3): > hi, > lo, > mid
  int32_t* boxes = nullptr;       // (n, 4): x0, y0, x1, y1 inclusive; CPU writes the final
                                  // values, CUDA atomically folds into {INT_MAX, INT_MAX, -1, -1}
  int64_t n = 0, h = 0, w = 0;
  int64_t height = 0, width = 0, row_words = 0;  // canvas
  int64_t top = 0, left = 0;                      // where the logit map sits on the canvas
  float hi = 0, lo = 0, mid = 0;
};

// CPU: masks [begin, end), final boxes ({0, 0, 0, 0} when empty).
void binarize_masks_cpu(const BinarizeParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
int binarize_cuda_launch(const BinarizeParams& p, void* stream);
#endif

}  // namespace segfast
