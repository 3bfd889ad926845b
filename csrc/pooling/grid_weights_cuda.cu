// CUDA mask-to-grid weights (torch-free). One block per (mask, grid row i): for a chunk of grid
// columns at a time, threads compute the band rows of T = M Rx^T into shared memory (band_sum,
// shared with the CPU kernel), then reduce them with row i's band weights. Each mask row is read
// by the one or two grid rows whose band holds it: the packed mask is read about once.
//
// Checked on the CPU: band_sum and bit_window (the CPU kernel runs the same code and is
// compared with the reference over hundreds of random size pairs per weight mode). Only a GPU
// run checks the column chunking, the shared-memory tile and the launch.
#include <cuda_runtime.h>

#include "pooling/grid_weights.h"

namespace segfast {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSmemFloats = 12 * 1024;  // 48 KiB

__global__ void __launch_bounds__(kThreads) grid_weights_kernel(GridWeightsParams p, int64_t chunk) {
  extern __shared__ float t[];  // (band rows, chunk columns)
  const int64_t m = blockIdx.x / p.out_h, i = blockIdx.x % p.out_h;
  const int64_t start = p.row_start[i], len = p.row_count[i];
  const float* wts = p.row_weights + i * p.row_len;
  const uint64_t* mask = p.masks + m * p.height * p.row_words;
  for (int64_t j0 = 0; j0 < p.out_w; j0 += chunk) {
    const int64_t cols = min(chunk, p.out_w - j0);
    for (int64_t e = threadIdx.x; e < len * cols; e += blockDim.x) {
      const int64_t k = e / cols, j = e % cols;
      t[e] = wts[k] == 0.f ? 0.f : band_sum(p, mask + (start + k) * p.row_words, j0 + j);
    }
    __syncthreads();
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      float acc = 0.f;
      for (int64_t k = 0; k < len; ++k) acc += wts[k] * t[k * cols + j];
      p.out[(m * p.out_h + i) * p.out_w + j0 + j] = acc;
    }
    __syncthreads();  // the next chunk overwrites t
  }
}

}  // namespace

int64_t grid_weights_cuda_max_band() { return kSmemFloats; }

int grid_weights_cuda_launch(const GridWeightsParams& p, void* stream) {
  if (p.n == 0 || p.out_h == 0 || p.out_w == 0) return 0;
  if (p.row_len < 1 || p.row_len > kSmemFloats || p.n * p.out_h > 0x7fffffffLL) return -1;
  const int64_t chunk = min_of<int64_t>(p.out_w, kSmemFloats / p.row_len);
  const size_t smem = sizeof(float) * (size_t)(p.row_len * chunk);
  grid_weights_kernel<<<(unsigned)(p.n * p.out_h), kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p, chunk);
  return (int)cudaGetLastError();
}

}  // namespace segfast
