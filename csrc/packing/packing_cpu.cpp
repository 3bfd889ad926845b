// CPU packing (torch-free): a row at a time with the shared 8-pixel helpers (a multiply per 8
// pixels one way, three shift-and-mask steps the other).
#include "packing/packing.h"

namespace segfast {

void pack_rows_cpu(const PackParams& p, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r)
    pack_row(p.dense + r * p.width, p.width, p.packed + r * 8 * p.row_words, 8 * p.row_words);
}

void unpack_rows_cpu(const PackParams& p, int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r)
    expand_row(p.packed + r * 8 * p.row_words, p.width, const_cast<uint8_t*>(p.dense) + r * p.width);
}

}  // namespace segfast
