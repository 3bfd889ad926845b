// CUDA mask-to-grid weights (torch-free). One block per (mask, grid row i): threads compute the
// band rows of T = M Rx^T for that grid row into shared memory (popcount for uniform bands, a
// set-bit loop otherwise), then reduce them with the row's band weights. Each mask row is read
// by the one or two grid rows whose band holds it: the packed mask is read about once.
#include <cuda_runtime.h>

#include "pooling/grid_weights.h"

namespace segfast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSmemFloats = 12 * 1024;  // 48 KiB

__device__ float band_sum(const GridWeightsParams& p, const uint64_t* row, int64_t j) {
  const int64_t start = p.col_start[j];
  const float* wts = p.col_weights + j * p.col_len;
  const int64_t len = min(p.col_len, p.width - start);
  float sum = 0.f;
  for (int64_t off = 0; off < len; off += 64) {
    unsigned long long bits = bit_window(row, p.row_words, start + off, min((int64_t)64, len - off));
    if (p.col_uniform[j]) {
      sum += wts[0] * (float)__popcll(bits);
      continue;
    }
    while (bits) {
      sum += wts[off + __ffsll((long long)bits) - 1];
      bits &= bits - 1;
    }
  }
  return sum;
}

__global__ void __launch_bounds__(kThreads) grid_weights_kernel(GridWeightsParams p) {
  extern __shared__ float t[];  // (band rows, out_w)
  const int64_t m = blockIdx.x / p.out_h, i = blockIdx.x % p.out_h;
  const int64_t start = p.row_start[i];
  const int64_t len = min(p.row_len, p.height - start);
  const float* wts = p.row_weights + i * p.row_len;
  const uint64_t* mask = p.masks + m * p.height * p.row_words;
  for (int64_t e = threadIdx.x; e < len * p.out_w; e += blockDim.x) {
    const int64_t k = e / p.out_w, j = e % p.out_w;
    t[e] = wts[k] == 0.f ? 0.f : band_sum(p, mask + (start + k) * p.row_words, j);
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < p.out_w; j += blockDim.x) {
    float acc = 0.f;
    for (int64_t k = 0; k < len; ++k) acc += wts[k] * t[k * p.out_w + j];
    p.out[(m * p.out_h + i) * p.out_w + j] = acc;
  }
}

}  // namespace

int grid_weights_cuda_launch(const GridWeightsParams& p, void* stream) {
  if (p.n == 0 || p.out_h == 0 || p.out_w == 0) return 0;
  if (p.row_len * p.out_w > kSmemFloats || p.n * p.out_h > 0x7fffffffLL) return -1;
  const size_t smem = sizeof(float) * (size_t)(p.row_len * p.out_w);
  grid_weights_kernel<<<(unsigned)(p.n * p.out_h), kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p);
  return (int)cudaGetLastError();
}

}  // namespace segfast
