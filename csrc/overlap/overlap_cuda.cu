// CUDA overlap counts (torch-free). Pairwise: a popcount GEMM. A block computes a 64x64 tile of
// pairs, staging 16-word slices of 64 A masks and 64 B masks in shared memory; each thread owns
// a 4x4 block of pairs and does popc(a & b) on 64-bit words. Masks are read as packed bits only
// (no dense or float copies). Matched: one block per pair, a strided popcount and a reduction.
#include <cuda_runtime.h>

#include "overlap/overlap.h"

namespace segfast {
namespace {

constexpr int kTile = 64;     // pairs per tile side
constexpr int kSlice = 16;    // 64-bit words per staged slice
constexpr int kThreads = 256; // 16 x 16 threads, 4 x 4 pairs each

__global__ void __launch_bounds__(kThreads) pairwise_kernel(OverlapParams p) {
  __shared__ unsigned long long as[kSlice][kTile + 1];
  __shared__ unsigned long long bs[kSlice][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t i0 = (int64_t)blockIdx.y * kTile, j0 = (int64_t)blockIdx.x * kTile;
  unsigned acc[4][4] = {};
  for (int64_t w0 = 0; w0 < p.words; w0 += kSlice) {
    // 64 rows x 16 words per operand: 4 loads per thread, 16 consecutive words per row
    for (int e = threadIdx.x; e < kTile * kSlice; e += kThreads) {
      const int r = e / kSlice, k = e % kSlice;
      const int64_t w = w0 + k;
      as[k][r] = (i0 + r < p.n && w < p.words) ? p.a[(i0 + r) * p.words + w] : 0ull;
      bs[k][r] = (j0 + r < p.m && w < p.words) ? p.b[(j0 + r) * p.words + w] : 0ull;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSlice; ++k) {
      unsigned long long a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = as[k][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = bs[k][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] += __popcll(a[i] & b[j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t gi = i0 + ty * 4 + i, gj = j0 + tx * 4 + j;
      if (gi < p.n && gj < p.m) p.out[gi * p.m + gj] = acc[i][j];
    }
}

__global__ void matched_kernel(OverlapParams p) {
  __shared__ unsigned long long partial[kThreads / 32];
  const int64_t i = blockIdx.x;
  unsigned long long count = 0;
  for (int64_t w = threadIdx.x; w < p.words; w += blockDim.x)
    count += __popcll(p.a[i * p.words + w] & p.b[i * p.words + w]);
  for (int off = 16; off > 0; off >>= 1) count += __shfl_down_sync(0xffffffffu, count, off);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long total = 0;
    for (int k = 0; k < kThreads / 32; ++k) total += partial[k];
    p.out[i] = (int64_t)total;
  }
}

}  // namespace

int overlap_pairwise_cuda_launch(const OverlapParams& p, void* stream) {
  if (p.n == 0 || p.m == 0) return 0;
  // per-pair counts accumulate in 32 bits: masks of up to 2^32 - 1 pixels
  if (p.words * 64 > 0xffffffffLL) return -1;
  const dim3 grid((unsigned)((p.m + kTile - 1) / kTile), (unsigned)((p.n + kTile - 1) / kTile));
  if (grid.y > 65535) return -1;
  pairwise_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return (int)cudaGetLastError();
}

int overlap_matched_cuda_launch(const OverlapParams& p, void* stream) {
  if (p.n == 0) return 0;
  if (p.n > 0x7fffffffLL) return -1;
  matched_kernel<<<(unsigned)p.n, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return (int)cudaGetLastError();
}

}  // namespace segfast
