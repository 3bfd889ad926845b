// CPU mask-to-grid weights (torch-free). Two separable passes per mask: T = M Rx^T row by row
// (a popcount per band when the band's weights are all equal, as area weights with an integer
// scale are; else a sum over the set bits only), then W = Ry T.
#include <algorithm>
#include <vector>

#include "pooling/grid_weights.h"

namespace segfast {
namespace {

// Sum of band weights over the set bits of columns [start, start + len) of one mask row.
inline float band_sum(const GridWeightsParams& p, const uint64_t* row, int64_t j, bool uniform) {
  const int64_t start = p.col_start[j];
  const float* wts = p.col_weights + j * p.col_len;
  const int64_t len = std::min(p.col_len, p.width - start);
  float sum = 0.f;
  for (int64_t off = 0; off < len; off += 64) {
    uint64_t bits = bit_window(row, p.row_words, start + off, std::min<int64_t>(64, len - off));
    if (uniform) {
      sum += wts[0] * (float)__builtin_popcountll(bits);
      continue;
    }
    while (bits) {
      sum += wts[off + __builtin_ctzll(bits)];
      bits &= bits - 1;
    }
  }
  return sum;
}

}  // namespace

void grid_weights_cpu(const GridWeightsParams& p, int64_t begin, int64_t end) {
  thread_local std::vector<float> t;  // (height, out_w)
  t.resize(p.height * p.out_w);
  for (int64_t m = begin; m < end; ++m) {
    const uint64_t* mask = p.masks + m * p.height * p.row_words;
    for (int64_t y = 0; y < p.height; ++y) {
      const uint64_t* row = mask + y * p.row_words;
      float* ty = t.data() + y * p.out_w;
      for (int64_t j = 0; j < p.out_w; ++j) ty[j] = band_sum(p, row, j, p.col_uniform[j]);
    }
    float* out = p.out + m * p.out_h * p.out_w;
    for (int64_t i = 0; i < p.out_h; ++i) {
      const int64_t start = p.row_start[i];
      const int64_t len = std::min(p.row_len, p.height - start);
      const float* wts = p.row_weights + i * p.row_len;
      float* oi = out + i * p.out_w;
      for (int64_t j = 0; j < p.out_w; ++j) oi[j] = 0.f;
      for (int64_t k = 0; k < len; ++k) {
        if (wts[k] == 0.f) continue;
        const float* ty = t.data() + (start + k) * p.out_w;
        for (int64_t j = 0; j < p.out_w; ++j) oi[j] += wts[k] * ty[j];
      }
    }
  }
}

}  // namespace segfast
