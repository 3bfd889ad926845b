// CUDA overlap counts (torch-free). Pairwise: a popcount GEMM. A block computes a 64x64 tile of
// pairs over one split of the words, staging 16-word slices of 64 A masks and 64 B masks in
// shared memory; each thread owns a 4x4 block of pairs and does popc(a & b) on 64-bit words,
// then adds its counts to the (zeroed) output atomically. Splitting the words (split-K) keeps
// every SM busy when there are few pairs (100 x 4 masks of 1024^2 are 2 tiles), and bounds each
// 32-bit partial count. Masks are read as packed bits only (no dense or float copies). Matched:
// one block per pair, a strided popcount and a reduction.
//
// Checked on the CPU: popcount_block4x4 (the multiply-add, shared with the CPU kernel, whose
// results the tests compare with the reference on random masks). Only a GPU run checks the
// shared-memory staging, the tile indexing and the launch (gpu tests, compute-sanitizer).
#include <cuda_runtime.h>

#include "overlap/overlap.h"

namespace segfast {
namespace {

constexpr int kTile = 64;      // pairs per tile side
constexpr int kSlice = 16;     // 64-bit words per staged slice
constexpr int kThreads = 256;  // 16 x 16 threads, 4 x 4 pairs each

__global__ void __launch_bounds__(kThreads) pairwise_kernel(OverlapParams p, int64_t split_words) {
  __shared__ unsigned long long as[kSlice][kTile + 1];
  __shared__ unsigned long long bs[kSlice][kTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t i0 = (int64_t)blockIdx.y * kTile, j0 = (int64_t)blockIdx.x * kTile;
  const int64_t w_begin = (int64_t)blockIdx.z * split_words;
  const int64_t w_end = min(p.words, w_begin + split_words);
  unsigned acc[4][4] = {};
  for (int64_t w0 = w_begin; w0 < w_end; w0 += kSlice) {
    // 64 rows x 16 words per operand: 4 loads per thread, 16 consecutive words per row
    for (int e = threadIdx.x; e < kTile * kSlice; e += kThreads) {
      const int r = e / kSlice, k = e % kSlice;
      const int64_t w = w0 + k;
      as[k][r] = (i0 + r < p.n && w < w_end) ? p.a[(i0 + r) * p.words + w] : 0ull;
      bs[k][r] = (j0 + r < p.m && w < w_end) ? p.b[(j0 + r) * p.words + w] : 0ull;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kSlice; ++k) {
      uint64_t a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = as[k][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = bs[k][tx * 4 + j];
      popcount_block4x4(a, b, acc);
    }
    __syncthreads();
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      const int64_t gi = i0 + ty * 4 + i, gj = j0 + tx * 4 + j;
      if (gi < p.n && gj < p.m && acc[i][j])
        atomicAdd(reinterpret_cast<unsigned long long*>(p.out) + gi * p.m + gj, (unsigned long long)acc[i][j]);
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
  const int64_t tiles_x = (p.m + kTile - 1) / kTile, tiles_y = (p.n + kTile - 1) / kTile;
  if (tiles_x > 0x7fffffffLL || tiles_y > 65535) return -1;
  int device = 0, sms = 1;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t splits = overlap_word_splits(p.words, tiles_x * tiles_y, sms, kSlice);
  const int64_t split_words = (p.words + splits - 1) / splits;
  const dim3 grid((unsigned)tiles_x, (unsigned)tiles_y, (unsigned)splits);
  pairwise_kernel<<<grid, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p, split_words);
  return (int)cudaGetLastError();
}

int overlap_matched_cuda_launch(const OverlapParams& p, void* stream) {
  if (p.n == 0) return 0;
  if (p.n > 0x7fffffffLL) return -1;
  matched_kernel<<<(unsigned)p.n, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(p);
  return (int)cudaGetLastError();
}

}  // namespace segfast
