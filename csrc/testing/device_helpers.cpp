// Ops segfast_testing::*: the __host__ __device__ helpers that the CUDA kernels use, run on the
// CPU so that tests/ops/test_device_helpers.py can check them exhaustively (all 2^16 inputs of
// expand16, all 2^8 of gather8, ...) against independent PyTorch code. Not a public API.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/bits.h"
#include "overlap/overlap.h"
#include "packing/packing.h"

namespace segfast {
namespace {

void check_cpu_long(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kLong && t.is_contiguous(), "segfast_testing: ", name,
              " must be contiguous int64 on the CPU");
}

// A uint64 result stored in an int64 tensor (same bits).
int64_t bits_of(uint64_t x) { return static_cast<int64_t>(x); }

at::Tensor expand16_op(const at::Tensor& bits) {
  check_cpu_long(bits, "bits");
  at::Tensor out = at::empty({bits.numel(), 16}, bits.options().dtype(at::kByte));
  const int64_t* in = bits.data_ptr<int64_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int64_t i = 0; i < bits.numel(); ++i) {
    const Bytes16 b = expand16((uint32_t)in[i]);
    for (int k = 0; k < 8; ++k)
      o[16 * i + k] = (uint8_t)(b.lo >> (8 * k)), o[16 * i + 8 + k] = (uint8_t)(b.hi >> (8 * k));
  }
  return out;
}

at::Tensor gather8_op(const at::Tensor& bools) {
  TORCH_CHECK(bools.device().is_cpu() && bools.scalar_type() == at::kByte && bools.is_contiguous() &&
                  bools.dim() == 2 && bools.size(1) == 8,
              "segfast_testing: bools must be contiguous uint8 (N, 8) on the CPU");
  at::Tensor out = at::empty({bools.size(0)}, bools.options().dtype(at::kLong));
  for (int64_t i = 0; i < bools.size(0); ++i) {
    uint64_t word = 0;
    for (int k = 0; k < 8; ++k) word |= (uint64_t)bools.data_ptr<uint8_t>()[8 * i + k] << (8 * k);
    out.data_ptr<int64_t>()[i] = gather8(word);
  }
  return out;
}

at::Tensor prefix_xor_op(const at::Tensor& words, int64_t bits) {
  check_cpu_long(words, "words");
  TORCH_CHECK(bits == 32 || bits == 64, "segfast_testing: bits must be 32 or 64");
  at::Tensor out = at::empty_like(words);
  for (int64_t i = 0; i < words.numel(); ++i) {
    const uint64_t w = (uint64_t)words.data_ptr<int64_t>()[i];
    out.data_ptr<int64_t>()[i] = bits == 32 ? (int64_t)prefix_xor32((uint32_t)w) : bits_of(prefix_xor64(w));
  }
  return out;
}

at::Tensor valid_bits32_op(const at::Tensor& words, const at::Tensor& widths) {
  check_cpu_long(words, "words");
  check_cpu_long(widths, "widths");
  TORCH_CHECK(words.numel() == widths.numel(), "segfast_testing: words and widths differ in size");
  at::Tensor out = at::empty_like(words);
  for (int64_t i = 0; i < words.numel(); ++i)
    out.data_ptr<int64_t>()[i] = valid_bits32(words.data_ptr<int64_t>()[i], widths.data_ptr<int64_t>()[i]);
  return out;
}

// bit_window over one packed row given as int64 words.
at::Tensor bit_window_op(const at::Tensor& row, const at::Tensor& starts, const at::Tensor& lens) {
  for (const auto& [t, name] : {std::pair{&row, "row"}, {&starts, "starts"}, {&lens, "lens"}}) check_cpu_long(*t, name);
  at::Tensor out = at::empty_like(starts);
  const uint64_t* words = reinterpret_cast<const uint64_t*>(row.data_ptr<int64_t>());
  for (int64_t i = 0; i < starts.numel(); ++i)
    out.data_ptr<int64_t>()[i] =
        bits_of(bit_window(words, row.numel(), starts.data_ptr<int64_t>()[i], lens.data_ptr<int64_t>()[i]));
  return out;
}

// The CUDA packing kernels' per-word path, word by word over (rows, width) bool masks.
at::Tensor pack_words_op(const at::Tensor& dense) {
  TORCH_CHECK(dense.device().is_cpu() && dense.scalar_type() == at::kBool && dense.is_contiguous() && dense.dim() == 2,
              "segfast_testing: dense must be contiguous bool (rows, width) on the CPU");
  const int64_t rows = dense.size(0), width = dense.size(1), words32 = 2 * packed_row_words(width);
  at::Tensor out = at::empty({rows, 4 * words32}, dense.options().dtype(at::kByte));
  const uint8_t* d = reinterpret_cast<const uint8_t*>(dense.data_ptr<bool>());
  uint32_t* o = reinterpret_cast<uint32_t*>(out.data_ptr<uint8_t>());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t w = 0; w < words32; ++w) o[r * words32 + w] = pack_word32(d + r * width, width, w);
  return out;
}

at::Tensor unpack_words_op(const at::Tensor& packed, int64_t width) {
  TORCH_CHECK(packed.device().is_cpu() && packed.scalar_type() == at::kByte && packed.is_contiguous() &&
                  packed.dim() == 2 && packed.size(1) == 8 * packed_row_words(width),
              "segfast_testing: packed must be contiguous uint8 (rows, 8 * ceil(width / 64)) on the CPU");
  at::Tensor out = at::empty({packed.size(0), width}, packed.options().dtype(at::kBool));
  const uint32_t* p = reinterpret_cast<const uint32_t*>(packed.data_ptr<uint8_t>());
  uint8_t* o = reinterpret_cast<uint8_t*>(out.data_ptr<bool>());
  const int64_t words32 = packed.size(1) / 4;
  for (int64_t r = 0; r < packed.size(0); ++r)
    for (int64_t w = 0; w < (width + 31) / 32; ++w) unpack_word32(p[r * words32 + w], o + r * width, width, w);
  return out;
}

at::Tensor popcount_block_op(const at::Tensor& a, const at::Tensor& b) {
  check_cpu_long(a, "a");
  check_cpu_long(b, "b");
  TORCH_CHECK(a.numel() == 4 && b.numel() == 4, "segfast_testing: a and b hold 4 words each");
  uint64_t va[4], vb[4];
  for (int i = 0; i < 4; ++i) va[i] = (uint64_t)a.data_ptr<int64_t>()[i], vb[i] = (uint64_t)b.data_ptr<int64_t>()[i];
  unsigned acc[4][4] = {};  // the CUDA kernel's accumulator type
  popcount_block4x4(va, vb, acc);
  at::Tensor out = at::empty({4, 4}, a.options());
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) out.data_ptr<int64_t>()[4 * i + j] = acc[i][j];
  return out;
}

int64_t overlap_word_splits_op(int64_t words, int64_t tiles, int64_t sms, int64_t slice) {
  return overlap_word_splits(words, tiles, sms, slice);
}

}  // namespace

TORCH_LIBRARY(segfast_testing, m) {
  m.def("overlap_word_splits(int words, int tiles, int sms, int slice) -> int", &overlap_word_splits_op);
  m.def("expand16(Tensor bits) -> Tensor", &expand16_op);
  m.def("gather8(Tensor bools) -> Tensor", &gather8_op);
  m.def("prefix_xor(Tensor words, int bits) -> Tensor", &prefix_xor_op);
  m.def("valid_bits32(Tensor words, Tensor widths) -> Tensor", &valid_bits32_op);
  m.def("bit_window(Tensor row, Tensor starts, Tensor lens) -> Tensor", &bit_window_op);
  m.def("pack_words(Tensor dense) -> Tensor", &pack_words_op);
  m.def("unpack_words(Tensor packed, int width) -> Tensor", &unpack_words_op);
  m.def("popcount_block(Tensor a, Tensor b) -> Tensor", &popcount_block_op);
}

}  // namespace segfast
