// CUDA packing (torch-free). One thread per packed 32-bit word (32 pixels): the (row, word)
// index costs one division per 32 pixels, not one per pixel. When every row starts on a
// 16-byte boundary (width % 16 == 0, the usual 256/1024-wide masks) a thread moves its 32 bool
// bytes with two 16-byte loads or stores; otherwise it goes through the shared byte helpers.
//
// Checked on the CPU (tests/ops/test_device_helpers.py): pack_word32 / unpack_word32 and the
// gather8 / expand16 they build on, exhaustively where the input space allows. Only a GPU run
// checks the indexing, the vector paths and the launch (tests marked gpu, compute-sanitizer).
#include <cuda_runtime.h>

#include "packing/packing.h"

namespace segfast {
namespace {

constexpr int kThreads = 256;

__global__ void pack_kernel(PackParams p, bool vector) {
  const int64_t words32 = 2 * p.row_words;
  const int64_t total = p.rows * words32;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / words32, w = i % words32;
    const uint8_t* row = p.dense + r * p.width;
    uint32_t word;
    if (vector && 32 * w + 32 <= p.width) {
      const uint4* src = reinterpret_cast<const uint4*>(row + 32 * w);
      const uint4 a = src[0], b = src[1];
      const uint64_t g[4] = {a.x | (uint64_t)a.y << 32, a.z | (uint64_t)a.w << 32, b.x | (uint64_t)b.y << 32,
                             b.z | (uint64_t)b.w << 32};
      word = gather8(g[0]) | gather8(g[1]) << 8 | gather8(g[2]) << 16 | gather8(g[3]) << 24;
    } else {
      word = pack_word32(row, p.width, w);
    }
    reinterpret_cast<uint32_t*>(p.packed)[i] = word;
  }
}

__global__ void unpack_kernel(PackParams p, bool vector) {
  const int64_t words32 = 2 * p.row_words;
  const int64_t per_row = (p.width + 31) / 32;  // words holding real pixels
  const int64_t total = p.rows * per_row;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / per_row, w = i % per_row;
    const uint32_t word = reinterpret_cast<const uint32_t*>(p.packed)[r * words32 + w];
    uint8_t* row = const_cast<uint8_t*>(p.dense) + r * p.width;
    if (vector && 32 * w + 32 <= p.width) {
      const Bytes16 a = expand16(word), b = expand16(word >> 16);
      uint4* dst = reinterpret_cast<uint4*>(row + 32 * w);
      dst[0] = make_uint4((uint32_t)a.lo, (uint32_t)(a.lo >> 32), (uint32_t)a.hi, (uint32_t)(a.hi >> 32));
      dst[1] = make_uint4((uint32_t)b.lo, (uint32_t)(b.lo >> 32), (uint32_t)b.hi, (uint32_t)(b.hi >> 32));
    } else {
      unpack_word32(word, row, p.width, w);
    }
  }
}

unsigned blocks_for(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  return (unsigned)(blocks < 65535 * 64 ? blocks : 65535 * 64);
}

bool rows_16_aligned(const PackParams& p) {
  return p.width % 16 == 0 && reinterpret_cast<uintptr_t>(p.dense) % 16 == 0;
}

}  // namespace

int pack_cuda_launch(const PackParams& p, void* stream) {
  const int64_t items = p.rows * 2 * p.row_words;
  if (items == 0) return 0;
  pack_kernel<<<blocks_for(items), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, rows_16_aligned(p));
  return (int)cudaGetLastError();
}

int unpack_cuda_launch(const PackParams& p, void* stream) {
  const int64_t items = p.rows * ((p.width + 31) / 32);
  if (items == 0) return 0;
  unpack_kernel<<<blocks_for(items), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, rows_16_aligned(p));
  return (int)cudaGetLastError();
}

}  // namespace segfast
