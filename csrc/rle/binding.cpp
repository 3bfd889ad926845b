// Op segfast::rle_encode (CPU): packed masks -> COCO RLE, counts or compressed strings, all
// masks in one flat tensor with offsets.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/bits.h"

#include <cstring>

#include "common/word_aligned.h"
#include "rle/rle.h"

namespace segfast {
namespace {

std::tuple<at::Tensor, at::Tensor> rle_encode_cpu(const at::Tensor& packed, int64_t height, int64_t width,
                                                  bool compress) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.dim() == 3 &&
                  packed.size(1) == height && packed.size(2) == 8 * packed_row_words(width),
              "segfast::rle_encode: packed must be contiguous uint8 of shape (N, height, 8 * ceil(width / 64))");
  const int64_t n = packed.size(0), row_words = packed_row_words(width);
  std::vector<std::vector<int64_t>> counts(n);
  std::vector<std::string> strings(compress ? n : 0);
  const uint64_t* base = word_aligned(packed, "segfast::rle_encode", "packed");
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      counts[m] = rle_counts(base + m * height * row_words, height, width, row_words);
      if (compress) strings[m] = rle_compress(counts[m]);
    }
  });
  at::Tensor offsets = at::empty({n + 1}, packed.options().dtype(at::kLong));
  int64_t* off = offsets.data_ptr<int64_t>();
  off[0] = 0;
  for (int64_t m = 0; m < n; ++m) off[m + 1] = off[m] + (compress ? strings[m].size() : counts[m].size());
  at::Tensor data = at::empty({off[n]}, packed.options().dtype(compress ? at::kByte : at::kLong));
  for (int64_t m = 0; m < n; ++m) {
    if (compress)
      std::memcpy(data.data_ptr<uint8_t>() + off[m], strings[m].data(), strings[m].size());
    else
      std::memcpy(data.data_ptr<int64_t>() + off[m], counts[m].data(), 8 * counts[m].size());
  }
  return {data, offsets};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) {
  m.def("rle_encode(Tensor packed, int height, int width, bool compress) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(segfast, CPU, m) { m.impl("rle_encode", &rle_encode_cpu); }

}  // namespace segfast
