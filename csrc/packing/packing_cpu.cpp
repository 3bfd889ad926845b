// CPU packing (torch-free): 8 pixels per multiply one way, a table lookup per byte the other.
#include <cstring>

#include "common/bits.h"
#include "packing/packing.h"

namespace segfast {

void pack_rows_cpu(const PackParams& p, int64_t begin, int64_t end) {
  const int64_t row_bytes = 8 * p.row_words;
  const int64_t full = p.width / 8;
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* src = p.dense + r * p.width;
    uint8_t* dst = p.packed + r * row_bytes;
    for (int64_t j = 0; j < full; ++j) dst[j] = gather_byte(src + 8 * j);
    int64_t j = full;
    if (p.width % 8) {  // the last partial byte
      uint8_t byte = 0;
      for (int64_t x = 8 * full; x < p.width; ++x) byte |= (uint8_t)(src[x] << (x % 8));
      dst[j++] = byte;
    }
    std::memset(dst + j, 0, row_bytes - j);
  }
}

void unpack_rows_cpu(const PackParams& p, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r)
    expand_bits(p.packed + r * 8 * p.row_words, p.width, const_cast<uint8_t*>(p.dense) + r * p.width);
}

}  // namespace segfast
