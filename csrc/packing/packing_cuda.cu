// CUDA packing (torch-free). Pack: one thread per pixel, a warp ballot assembles each 32-bit
// word (lane = bit, little order), so reads and writes are both coalesced. Unpack: one thread
// per pixel reads its word (broadcast within the warp) and writes its byte.
#include <cuda_runtime.h>

#include "packing/packing.h"

namespace segfast {
namespace {

constexpr int kThreads = 256;

__global__ void pack_kernel(PackParams p) {
  const int64_t words32 = 2 * p.row_words;  // 32-bit words per packed row
  const int64_t total = p.rows * words32 * 32;
  // total is a multiple of 32 and warps start at multiples of 32: the loop condition is
  // uniform across each warp, as the ballot requires.
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / (words32 * 32);
    const int64_t x = i % (words32 * 32);
    const bool on = x < p.width && p.dense[r * p.width + x];
    const unsigned word = __ballot_sync(0xffffffffu, on);
    if (threadIdx.x % 32 == 0)
      reinterpret_cast<unsigned*>(p.packed)[r * words32 + x / 32] = word;
  }
}

__global__ void unpack_kernel(PackParams p) {
  const int64_t total = p.rows * p.width;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / p.width, x = i % p.width;
    const unsigned word = reinterpret_cast<const unsigned*>(p.packed)[r * 2 * p.row_words + x / 32];
    const_cast<uint8_t*>(p.dense)[i] = (word >> (x % 32)) & 1u;
  }
}

unsigned blocks_for(int64_t items) {
  const int64_t blocks = (items + kThreads - 1) / kThreads;
  return (unsigned)(blocks < 65535 * 64 ? blocks : 65535 * 64);
}

}  // namespace

int pack_cuda_launch(const PackParams& p, void* stream) {
  const int64_t items = p.rows * 2 * p.row_words * 32;
  if (items == 0) return 0;
  pack_kernel<<<blocks_for(items), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return (int)cudaGetLastError();
}

int unpack_cuda_launch(const PackParams& p, void* stream) {
  const int64_t items = p.rows * p.width;
  if (items == 0) return 0;
  unpack_kernel<<<blocks_for(items), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return (int)cudaGetLastError();
}

}  // namespace segfast
