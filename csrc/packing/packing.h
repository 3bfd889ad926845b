// Packing masks into bits and back. A mask set is `rows` rows of `width` pixels (any leading
// dimensions flattened); a packed row holds 8 * row_words bytes, bits in little order, padding
// bits zero. Both directions work a 32-bit word (32 pixels) at a time through the helpers
// below, which the CPU and CUDA kernels share.
#pragma once

#include <cstdint>

#include "common/bits.h"

namespace segfast {

struct PackParams {
  const uint8_t* dense = nullptr;  // (rows, width) bool bytes, each 0 or 1
  uint8_t* packed = nullptr;       // (rows, 8 * row_words)
  int64_t rows = 0;
  int64_t width = 0;
  int64_t row_words = 0;  // ceil(width / 64)
};

// Packed 32-bit word w of a row from the row's bool bytes (pixels past the width are 0).
SEGFAST_HD uint32_t pack_word32(const uint8_t* row, int64_t width, int64_t w) {
  uint32_t word = 0;
  for (int g = 0; g < 4; ++g) {
    const int64_t x0 = 32 * w + 8 * g;
    const int64_t n = min_of<int64_t>(8, width - x0);
    if (n <= 0) break;
    uint64_t bytes = 0;
    for (int64_t i = 0; i < n; ++i) bytes |= (uint64_t)row[x0 + i] << (8 * i);
    word |= gather8(bytes) << (8 * g);
  }
  return word;
}

// Bool bytes of the pixels of packed 32-bit word w that lie inside the width.
SEGFAST_HD void unpack_word32(uint32_t word, uint8_t* row, int64_t width, int64_t w) {
  for (int g = 0; g < 4; ++g) {
    const int64_t x0 = 32 * w + 8 * g;
    const int64_t n = min_of<int64_t>(8, width - x0);
    if (n <= 0) break;
    const uint64_t bytes = expand8(word >> (8 * g));
    for (int64_t i = 0; i < n; ++i) row[x0 + i] = (uint8_t)(bytes >> (8 * i));
  }
}

// CPU: rows [begin, end).
void pack_rows_cpu(const PackParams& p, int64_t begin, int64_t end);
void unpack_rows_cpu(const PackParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
int pack_cuda_launch(const PackParams& p, void* stream);
int unpack_cuda_launch(const PackParams& p, void* stream);
#endif

}  // namespace segfast
