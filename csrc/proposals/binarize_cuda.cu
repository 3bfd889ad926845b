// CUDA binarize in two launches. Rows: a warp per canvas row, lanes over 32 consecutive pixels;
// a ballot forms each 32-bit word of packed bits (coalesced reads and writes) and the row's
// MaskStats is reduced across the warp and written to scratch. Pixels outside the logit map's
// window are 0 without a read, so the crop is padded to the canvas for free. Fold: a block per
// mask merges its rows' stats and writes counts and box. No atomics: the result does not depend
// on scheduling.
//
// Checked on the CPU: add_pixel, merge_stats and finish_stats (the whole counting and box
// logic; the CPU kernel runs the same helpers and is compared with segment-anything's formulas
// for positive, zero and negative stability offsets). Only a GPU run checks the ballots, the
// warp and block reductions and the launch.
#include <cuda_runtime.h>

#include "proposals/binarize.h"

namespace segfast {
namespace {

constexpr int kWarps = 8;
constexpr int kFoldThreads = 256;

__device__ MaskStats shfl_down(const MaskStats& s, int off) {
  return {__shfl_down_sync(0xffffffffu, s.n_hi, off),  __shfl_down_sync(0xffffffffu, s.n_lo, off),
          __shfl_down_sync(0xffffffffu, s.n_mid, off), __shfl_down_sync(0xffffffffu, s.x0, off),
          __shfl_down_sync(0xffffffffu, s.y0, off),    __shfl_down_sync(0xffffffffu, s.x1, off),
          __shfl_down_sync(0xffffffffu, s.y1, off)};
}

__device__ MaskStats warp_merge(MaskStats s) {
  for (int off = 16; off > 0; off >>= 1) s = merge_stats(s, shfl_down(s, off));
  return s;  // lane 0 holds the total
}

__global__ void rows_kernel(BinarizeParams p, MaskStats* row_stats, int64_t tiles) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t m = blockIdx.x / tiles;
  const int64_t y = (blockIdx.x % tiles) * kWarps + warp;
  if (y >= p.height) return;  // whole warp leaves together
  unsigned* out = reinterpret_cast<unsigned*>(p.packed) + (m * p.height + y) * 2 * p.row_words;
  const int64_t r = y - p.top;
  const bool row_in = r >= 0 && r < p.h;
  const float* src = p.logits + (m * p.h + (row_in ? r : 0)) * p.w;
  MaskStats s = empty_stats();
  for (int64_t base = 0; base < 64 * p.row_words; base += 32) {
    const int64_t i = base + lane - p.left;
    const bool in = row_in && i >= 0 && i < p.w;
    const float v = in ? src[i] : 0.f;
    if (in) add_pixel(s, p, v, (int32_t)(base + lane), (int32_t)y);
    const unsigned word = __ballot_sync(0xffffffffu, in && v > p.mid);
    if (lane == 0) out[base / 32] = word;
  }
  s = warp_merge(s);
  if (lane == 0) row_stats[m * p.height + y] = s;
}

__global__ void fold_kernel(BinarizeParams p, const MaskStats* row_stats) {
  __shared__ MaskStats partial[kFoldThreads / 32];
  const int64_t m = blockIdx.x;
  MaskStats s = empty_stats();
  for (int64_t y = threadIdx.x; y < p.height; y += blockDim.x) s = merge_stats(s, row_stats[m * p.height + y]);
  s = warp_merge(s);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    MaskStats total = empty_stats();
    for (int k = 0; k < kFoldThreads / 32; ++k) total = merge_stats(total, partial[k]);
    finish_stats(p, m, total);
  }
}

}  // namespace

int binarize_cuda_launch(const BinarizeParams& p, MaskStats* row_stats, void* stream) {
  const int64_t tiles = (p.height + kWarps - 1) / kWarps;
  const int64_t blocks = p.n * tiles;
  if (p.n == 0) return 0;
  if (p.n > INT_MAX || blocks > INT_MAX || p.height > INT_MAX || 64 * p.row_words > INT_MAX) return -1;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (blocks > 0) rows_kernel<<<(unsigned)blocks, 32 * kWarps, 0, s>>>(p, row_stats, tiles);
  fold_kernel<<<(unsigned)p.n, kFoldThreads, 0, s>>>(p, row_stats);
  return (int)cudaGetLastError();
}

}  // namespace segfast
