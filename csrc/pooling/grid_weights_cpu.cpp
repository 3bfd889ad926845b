// CPU mask-to-grid weights (torch-free). Two separable passes per mask: T = M Rx^T row by row
// (band_sum, shared with the CUDA kernel), then W = Ry T.
#include <vector>

#include "pooling/grid_weights.h"

namespace segfast {

void grid_weights_cpu(const GridWeightsParams& p, int64_t begin, int64_t end) {
  thread_local std::vector<float> t;  // (height, out_w)
  t.resize(p.height * p.out_w);
  for (int64_t m = begin; m < end; ++m) {
    const uint64_t* mask = p.masks + m * p.height * p.row_words;
    for (int64_t y = 0; y < p.height; ++y) {
      const uint64_t* row = mask + y * p.row_words;
      float* ty = t.data() + y * p.out_w;
      for (int64_t j = 0; j < p.out_w; ++j) ty[j] = band_sum(p, row, j);
    }
    float* out = p.out + m * p.out_h * p.out_w;
    for (int64_t i = 0; i < p.out_h; ++i) {
      const int64_t start = p.row_start[i];
      const float* wts = p.row_weights + i * p.row_len;
      float* oi = out + i * p.out_w;
      for (int64_t j = 0; j < p.out_w; ++j) oi[j] = 0.f;
      for (int64_t k = 0; k < p.row_count[i]; ++k) {
        if (wts[k] == 0.f) continue;
        const float* ty = t.data() + (start + k) * p.out_w;
        for (int64_t j = 0; j < p.out_w; ++j) oi[j] += wts[k] * ty[j];
      }
    }
  }
}

}  // namespace segfast
