// Packing masks into bits and back. A mask set is `rows` rows of `width` pixels (any leading
// dimensions flattened); a packed row holds 8 * row_words bytes, bits in little order, padding
// bits zero.
#pragma once

#include <cstdint>

namespace segfast {

struct PackParams {
  const uint8_t* dense = nullptr;   // (rows, width) bool bytes, each 0 or 1
  uint8_t* packed = nullptr;        // (rows, 8 * row_words)
  int64_t rows = 0;
  int64_t width = 0;
  int64_t row_words = 0;            // ceil(width / 64)
};

// CPU: rows [begin, end).
void pack_rows_cpu(const PackParams& p, int64_t begin, int64_t end);
void unpack_rows_cpu(const PackParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
int pack_cuda_launch(const PackParams& p, void* stream);
int unpack_cuda_launch(const PackParams& p, void* stream);
#endif

}  // namespace segfast
