#include "rle/rle.h"

namespace segfast {
namespace {

// In-place transpose of a 64x64 bit matrix, element (r, c) = bit c of a[r] (Hacker's Delight
// recursive block swap, 6 rounds).
void transpose64(uint64_t a[64]) {
  uint64_t m = 0x00000000FFFFFFFFULL;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j)
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
}

}  // namespace

std::vector<int64_t> rle_counts(const uint64_t* mask, int64_t height, int64_t width, int64_t row_words) {
  const int64_t col_words = (height + 63) / 64;
  std::vector<uint64_t> cols(width * col_words);  // column x, rows 64 * k .. 64 * k + 63
  uint64_t block[64];
  for (int64_t k = 0; k < col_words; ++k)
    for (int64_t j = 0; j < row_words; ++j) {
      for (int r = 0; r < 64; ++r) {
        const int64_t y = 64 * k + r;
        block[r] = y < height ? mask[y * row_words + j] : 0;
      }
      transpose64(block);
      for (int c = 0; c < 64 && 64 * j + c < width; ++c) cols[(64 * j + c) * col_words + k] = block[c];
    }
  std::vector<int64_t> counts;
  int64_t run = 0;
  uint64_t cur = 0;  // value of the previous pixel; the first run counts zeros
  for (int64_t x = 0; x < width; ++x)
    for (int64_t k = 0; k < col_words; ++k) {
      const int n = (int)(height - 64 * k < 64 ? height - 64 * k : 64);
      const uint64_t valid = n == 64 ? ~0ULL : (1ULL << n) - 1;
      const uint64_t w = cols[x * col_words + k];
      uint64_t change = (w ^ ((w << 1) | cur)) & valid;
      int start = 0;
      while (change) {
        const int at = __builtin_ctzll(change);
        counts.push_back(run + at - start);
        run = 0, start = at;
        change &= change - 1;
      }
      run += n - start;
      cur = (w >> (n - 1)) & 1;
    }
  counts.push_back(run);
  return counts;
}

std::string rle_compress(const std::vector<int64_t>& counts) {
  std::string s;
  for (size_t i = 0; i < counts.size(); ++i) {
    int64_t x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      char c = (char)(x & 0x1f);
      x >>= 5;  // arithmetic shift, as pycocotools
      more = (c & 0x10) ? x != -1 : x != 0;
      if (more) c |= 0x20;
      s.push_back((char)(c + 48));
    }
  }
  return s;
}

}  // namespace segfast
