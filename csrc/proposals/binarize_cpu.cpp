// CPU binarize: one mask per task, row by row; each canvas row's words are built in place.
#include <cstring>

#include "proposals/binarize.h"

namespace segfast {

void binarize_masks_cpu(const BinarizeParams& p, int64_t begin, int64_t end) {
  const int64_t row_bytes = 8 * p.row_words;
  for (int64_t m = begin; m < end; ++m) {
    uint64_t* out = reinterpret_cast<uint64_t*>(p.packed + m * p.height * row_bytes);
    std::memset(out, 0, p.height * row_bytes);
    MaskStats total = empty_stats();
    for (int64_t r = 0; r < p.h; ++r) {
      const float* src = p.logits + (m * p.h + r) * p.w;
      uint64_t* row = out + (p.top + r) * p.row_words;
      MaskStats s = empty_stats();
      for (int64_t i = 0; i < p.w; ++i) {
        const int64_t x = p.left + i;
        add_pixel(s, p, src[i], (int32_t)x, (int32_t)(p.top + r));
        row[x >> 6] |= uint64_t(src[i] > p.mid) << (x & 63);
      }
      total = merge_stats(total, s);
    }
    finish_stats(p, m, total);
  }
}

}  // namespace segfast
