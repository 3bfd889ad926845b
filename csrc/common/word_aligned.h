// Packed masks are read as 32- and 64-bit words, so their data must start on an 8-byte
// boundary: a uint8 view at an odd byte offset would be a misaligned-address fault on the GPU
// (and undefined behaviour on the CPU). The segfast.ops wrappers copy such views first; this
// check guards direct torch.ops.segfast calls.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace segfast {

template <typename Word = uint64_t>
const Word* word_aligned(const at::Tensor& t, const char* op, const char* name) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(t.data_ptr());
  TORCH_CHECK(address % 8 == 0, op, ": ", name,
              " must start on an 8-byte boundary to be read as 64-bit words, "
              "but this view starts ",
              address % 8, " bytes past one; pass a copy (segfast.ops does)");
  return static_cast<const Word*>(t.data_ptr());
}

}  // namespace segfast
