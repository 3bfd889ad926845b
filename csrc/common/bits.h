// Bit <-> byte conversions for packed masks (little bit order: pixel x is bit x % 8 of byte
// x / 8). Host only; the CUDA kernels use warp ballots instead.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>

namespace segfast {

// Byte i of kExpandByte[b] is bit i of b: 8 coverage bits -> 8 bool bytes (little-endian).
inline const std::array<uint64_t, 256> kExpandByte = [] {
  std::array<uint64_t, 256> t{};
  for (int b = 0; b < 256; ++b)
    for (int i = 0; i < 8; ++i)
      if (b >> i & 1) t[b] |= uint64_t{1} << (8 * i);
  return t;
}();

// 8 bool bytes (each 0 or 1) -> 8 bits, bit i = byte i. The multiply moves byte i's low bit to
// bit 56 + i; the partial products never share a bit position, so nothing carries.
inline uint8_t gather_byte(const uint8_t* bools) {
  uint64_t x;
  std::memcpy(&x, bools, 8);
  return (uint8_t)((x * 0x0102040810204080ULL) >> 56);
}

// Writes `count` bool bytes for bits [0, count) of `bits`.
inline void expand_bits(const uint8_t* bits, int64_t count, uint8_t* out) {
  const int64_t full = count / 8;
  for (int64_t j = 0; j < full; ++j) std::memcpy(out + 8 * j, &kExpandByte[bits[j]], 8);
  for (int64_t x = 8 * full; x < count; ++x) out[x] = (bits[x / 8] >> (x % 8)) & 1;
}

}  // namespace segfast
