// COCO run-length encoding of packed masks (torch-free). COCO runs go down columns (Fortran
// order) while packed rows run along the width, so each 64x64 bit block is transposed in
// registers first; runs are then found a word at a time with count-trailing-zeros.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace segfast {

// Run lengths of one (height, width) packed mask (rows of row_words 64-bit words), starting
// with the run of zeros (0 when the first pixel is set), as pycocotools' uncompressed RLE.
std::vector<int64_t> rle_counts(const uint64_t* mask, int64_t height, int64_t width, int64_t row_words);

// pycocotools' compressed string form (rleToString): deltas against the count two back,
// 5 bits per character with a continuation bit, offset by 48.
std::string rle_compress(const std::vector<int64_t>& counts);

}  // namespace segfast
