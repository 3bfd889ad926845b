// Packed masks are read as 32- and 64-bit words, so their data must start on an 8-byte
// boundary: a uint8 view at an odd byte offset would be a misaligned-address fault on the GPU
// (and undefined behaviour on the CPU). The segfast.ops wrappers copy such views first; this
// check guards direct torch.ops.segfast calls.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace segfast {

template <typename Word = uint64_t>
const Word* word_aligned(const at::Tensor& t, const char* op, const char* name) {
  const uintptr_t offset = reinterpret_cast<uintptr_t>(t.data_ptr()) % 8;
  // The message is built here and passed as one C string: on the first GPU machine (GCC 13.3,
  // torch 2.11) this check's failure segfaulted when formatted through TORCH_CHECK's variadic
  // c10::str path, while single-string checks raised cleanly (benchmarks/results/README.md).
  if (offset != 0) {
    const std::string message = std::string(op) + ": " + name +
                                " must start on an 8-byte boundary to be read as 64-bit words, but this view "
                                "starts " +
                                std::to_string(offset) + " bytes past one; pass a copy (segfast.ops does)";
    TORCH_CHECK(false, message.c_str());
  }
  return static_cast<const Word*>(t.data_ptr());
}

}  // namespace segfast
