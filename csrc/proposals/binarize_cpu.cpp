// CPU binarize: one mask per task, row by row; each canvas row's words are built in place.
#include <algorithm>
#include <cstring>

#include "proposals/binarize.h"

namespace segfast {

void binarize_masks_cpu(const BinarizeParams& p, int64_t begin, int64_t end) {
  const int64_t row_bytes = 8 * p.row_words;
  for (int64_t m = begin; m < end; ++m) {
    uint64_t* out = reinterpret_cast<uint64_t*>(p.packed + m * p.height * row_bytes);
    std::memset(out, 0, p.height * row_bytes);
    int32_t n_hi = 0, n_lo = 0, n_mid = 0;
    int64_t x0 = p.width, y0 = p.height, x1 = -1, y1 = -1;
    for (int64_t r = 0; r < p.h; ++r) {
      const float* src = p.logits + (m * p.h + r) * p.w;
      uint64_t* row = out + (p.top + r) * p.row_words;
      for (int64_t i = 0; i < p.w; ++i) {
        const float v = src[i];
        n_hi += v > p.hi;
        n_lo += v > p.lo;
        const bool on = v > p.mid;
        n_mid += on;
        const int64_t x = p.left + i;
        row[x >> 6] |= uint64_t(on) << (x & 63);
      }
      int64_t first = -1, last = -1;
      for (int64_t j = 0; j < p.row_words; ++j)
        if (row[j]) {
          if (first < 0) first = 64 * j + __builtin_ctzll(row[j]);
          last = 64 * j + 63 - __builtin_clzll(row[j]);
        }
      if (first >= 0) {
        x0 = std::min(x0, first);
        x1 = std::max(x1, last);
        y0 = std::min(y0, p.top + r);
        y1 = p.top + r;
      }
    }
    int32_t* c = p.counts + 3 * m;
    c[0] = n_hi, c[1] = n_lo, c[2] = n_mid;
    int32_t* b = p.boxes + 4 * m;
    if (y1 < 0) b[0] = b[1] = b[2] = b[3] = 0;
    else b[0] = (int32_t)x0, b[1] = (int32_t)y0, b[2] = (int32_t)x1, b[3] = (int32_t)y1;
  }
}

}  // namespace segfast
