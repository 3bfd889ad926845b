// CUDA binarize: a warp per canvas row, lanes over 32 consecutive pixels; a ballot forms each
// 32-bit word of packed bits (coalesced reads and writes), counts and box extents are reduced
// per warp and folded into the mask's totals with one atomic each. Pixels outside the logit
// map's window are 0 without a read, so the crop is padded to the canvas for free.
#include <cuda_runtime.h>

#include <climits>

#include "proposals/binarize.h"

namespace segfast {
namespace {

constexpr int kWarps = 8;

__global__ void binarize_kernel(BinarizeParams p, int64_t tiles) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t m = blockIdx.x / tiles;
  const int64_t y = (blockIdx.x % tiles) * kWarps + warp;
  if (y >= p.height) return;  // whole warp leaves together
  unsigned* out = reinterpret_cast<unsigned*>(p.packed) + (m * p.height + y) * 2 * p.row_words;
  const int64_t r = y - p.top;
  const bool row_in = r >= 0 && r < p.h;
  const float* src = p.logits + (m * p.h + (row_in ? r : 0)) * p.w;
  int n_hi = 0, n_lo = 0, n_mid = 0, x0 = INT_MAX, x1 = -1;
  for (int64_t base = 0; base < 64 * p.row_words; base += 32) {
    const int64_t i = base + lane - p.left;
    const bool in = row_in && i >= 0 && i < p.w;
    const float v = in ? src[i] : 0.f;
    n_hi += in && v > p.hi;
    n_lo += in && v > p.lo;
    const bool on = in && v > p.mid;
    n_mid += on;
    if (on) {
      x0 = min(x0, (int)(base + lane));
      x1 = (int)(base + lane);
    }
    const unsigned word = __ballot_sync(0xffffffffu, on);
    if (lane == 0) out[base / 32] = word;
  }
  n_hi = __reduce_add_sync(0xffffffffu, n_hi);
  n_lo = __reduce_add_sync(0xffffffffu, n_lo);
  n_mid = __reduce_add_sync(0xffffffffu, n_mid);
  x0 = __reduce_min_sync(0xffffffffu, x0);
  x1 = __reduce_max_sync(0xffffffffu, x1);
  if (lane == 0 && n_lo) {  // n_lo >= n_mid >= n_hi
    atomicAdd(p.counts + 3 * m, n_hi);
    atomicAdd(p.counts + 3 * m + 1, n_lo);
    atomicAdd(p.counts + 3 * m + 2, n_mid);
    if (n_mid) {
      int* b = p.boxes + 4 * m;
      atomicMin(b, x0);
      atomicMin(b + 1, (int)y);
      atomicMax(b + 2, x1);
      atomicMax(b + 3, (int)y);
    }
  }
}

}  // namespace

int binarize_cuda_launch(const BinarizeParams& p, void* stream) {
  const int64_t tiles = (p.height + kWarps - 1) / kWarps;
  const int64_t blocks = p.n * tiles;
  if (blocks == 0) return 0;
  if (blocks > INT_MAX || p.height > INT_MAX || 64 * p.row_words > INT_MAX) return -1;
  binarize_kernel<<<(unsigned)blocks, 32 * kWarps, 0, static_cast<cudaStream_t>(stream)>>>(p, tiles);
  return (int)cudaGetLastError();
}

}  // namespace segfast
