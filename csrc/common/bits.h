// Bit helpers for packed masks, shared by the CPU (g++) and CUDA (nvcc) kernels so that the CPU
// tests check exactly what the GPU runs (tests/ops/test_device_helpers.py, through the
// segfast_testing ops in csrc/testing/). Packed layout: little bit order, pixel x is bit x % 8
// of byte x / 8, i.e. bit x % 64 of 64-bit word x / 64 on little-endian machines. No torch here.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

#include "common/hd.h"

namespace segfast {

// 64-bit words in a packed row of `width` pixels; its bytes are 8 * packed_row_words(width).
SEGFAST_HD int64_t packed_row_words(int64_t width) { return (width + 63) / 64; }

SEGFAST_HD int popcount64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __popcll(x);
#else
  return __builtin_popcountll(x);
#endif
}

// Index of the lowest set bit; x must be non-zero.
SEGFAST_HD int lowest_bit64(uint64_t x) {
#if defined(__CUDA_ARCH__)
  return __ffsll((long long)x) - 1;
#else
  return __builtin_ctzll(x);
#endif
}

// The low n bits set, n in [0, 64] (a plain shift by 64 is undefined).
SEGFAST_HD uint64_t low_bits64(int64_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

// Bits of 32-bit word w of a packed row that are real pixels of a `width`-wide row (the rest
// is row padding and must stay zero).
SEGFAST_HD uint32_t valid_bits32(int64_t w, int64_t width) {
  const int64_t lo = 32 * w;
  if (lo >= width) return 0u;
  return (uint32_t)low_bits64(min_of<int64_t>(32, width - lo));
}

// In-word inclusive prefix XOR: bit i becomes the parity of bits 0..i (toggles -> coverage).
SEGFAST_HD uint32_t prefix_xor32(uint32_t w) {
  w ^= w << 1;
  w ^= w << 2;
  w ^= w << 4;
  w ^= w << 8;
  w ^= w << 16;
  return w;
}

SEGFAST_HD uint64_t prefix_xor64(uint64_t w) {
  w ^= w << 1;
  w ^= w << 2;
  w ^= w << 4;
  w ^= w << 8;
  w ^= w << 16;
  w ^= w << 32;
  return w;
}

// The low 8 bits of `bits` -> 8 bool bytes (byte i = bit i) in a little-endian word. Each step
// spreads groups apart and masks them; the higher bits of `bits` are dropped first, so nothing
// leaks into a neighbouring byte.
SEGFAST_HD uint64_t expand8(uint32_t bits) {
  uint64_t x = bits & 0xffu;
  x = (x | (x << 28)) & 0x0000000F0000000FULL;
  x = (x | (x << 14)) & 0x0003000300030003ULL;
  x = (x | (x << 7)) & 0x0101010101010101ULL;
  return x;
}

// The low 16 bits of `bits` -> 16 bool bytes, as two little-endian words (one 16-byte store).
struct Bytes16 {
  uint64_t lo, hi;
};
SEGFAST_HD Bytes16 expand16(uint32_t bits) { return {expand8(bits), expand8(bits >> 8)}; }

// 8 bool bytes (each 0 or 1, little-endian word) -> 8 bits, bit i = byte i. The multiply moves
// byte i's low bit to bit 56 + i; the partial products never share a bit, so nothing carries.
SEGFAST_HD uint32_t gather8(uint64_t bools) { return (uint32_t)((bools * 0x0102040810204080ULL) >> 56); }

// Bits [start, start + len) of a packed row of row_words words (len <= 64, the bits inside the
// row), as the low bits of a word.
SEGFAST_HD uint64_t bit_window(const uint64_t* row, int64_t row_words, int64_t start, int64_t len) {
  const int64_t word = start / 64, shift = start % 64;
  uint64_t bits = row[word] >> shift;
  if (shift && word + 1 < row_words) bits |= row[word + 1] << (64 - shift);
  return bits & low_bits64(len);
}

// ---- host-only row loops over the helpers above ---------------------------------------------

// expand8 of every byte: on the CPU one load beats the shift steps (2.5x in a loop over 32 MB).
// The table is made by expand8 itself, so expand8's exhaustive test covers it.
inline const std::array<uint64_t, 256> kExpand8 = [] {
  std::array<uint64_t, 256> table{};
  for (uint32_t b = 0; b < 256; ++b) table[b] = expand8(b);
  return table;
}();

// `count` bool bytes for bits [0, count) of a packed row.
inline void expand_row(const uint8_t* bits, int64_t count, uint8_t* out) {
  const int64_t full = count / 8;
  for (int64_t j = 0; j < full; ++j) std::memcpy(out + 8 * j, &kExpand8[bits[j]], 8);
  if (count % 8) std::memcpy(out + 8 * full, &kExpand8[bits[full]], count % 8);
}

// A packed row of `row_bytes` bytes (padding bits and bytes zero) from `count` bool bytes.
inline void pack_row(const uint8_t* bools, int64_t count, uint8_t* out, int64_t row_bytes) {
  const int64_t full = count / 8;
  for (int64_t j = 0; j < full; ++j) {
    uint64_t bytes;
    std::memcpy(&bytes, bools + 8 * j, 8);
    out[j] = (uint8_t)gather8(bytes);
  }
  int64_t j = full;
  if (count % 8) {
    uint64_t bytes = 0;
    std::memcpy(&bytes, bools + 8 * full, count % 8);
    out[j++] = (uint8_t)gather8(bytes);
  }
  std::memset(out + j, 0, row_bytes - j);
}

}  // namespace segfast
