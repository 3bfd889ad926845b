// CUDA polygon rasterizer (torch-free). One block fills a tile of up to 32 rows of one mask in
// shared memory as bits, the same way the CPU kernel does (toggles -> prefix XOR -> OR over the
// mask's polygons), then streams the tile out with coalesced 16-byte stores. The output is
// written exactly once and nothing else touches global memory but the (tiny) vertex reads, so
// the kernel is bound by output write bandwidth.
//
// Checked on the CPU (the CPU kernel calls the same helpers, and tests/ops/test_device_helpers.py
// runs them exhaustively): the geometry (center_first_column, coco_edge / coco_columns /
// coco_toggle_row), prefix_xor32, valid_bits32 and expand16 (every 16-bit pattern). Only a GPU
// run checks the shared-memory tiling, the warp scan in center_fill, the atomics and the stores.
#include <cuda_runtime.h>

#include "common/bits.h"
#include "rasterize/rasterize.h"

namespace segfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxRows = 32;
constexpr int kSmemWords = 12 * 1024;  // 48 KiB: the default dynamic shared-memory limit

__device__ void center_toggles(const RasterizeParams& p, const double* v, int64_t n, int64_t r0, int rows, int w32,
                               uint32_t* toggles) {
  for (int64_t i = threadIdx.x; i < n * rows; i += blockDim.x) {
    const int64_t e = i / rows;
    const int r = (int)(i % rows);
    const double* a = v + 2 * e;
    const double* b = v + 2 * ((e + 1) % n);
    if (a[1] > b[1]) {
      const double* t = a;
      a = b;
      b = t;
    }
    const double yc = (double)(r0 + r) + 0.5;
    if (!(a[1] <= yc && yc < b[1])) continue;
    const int64_t k = center_first_column(a[0], a[1], b[0], b[1], yc, p.width);
    if (k < p.width) atomicXor(&toggles[r * w32 + k / 32], 1u << (k % 32));
  }
}

// Toggles -> coverage along each row, one warp per row, carrying parity across words.
__device__ void center_fill(int64_t width, int rows, int w32, const uint32_t* toggles, uint32_t* cover) {
  const int lane = threadIdx.x % 32;
  for (int r = threadIdx.x / 32; r < rows; r += kWarps) {
    uint32_t carry = 0;
    for (int base = 0; base < w32; base += 32) {
      const int w = base + lane;
      uint32_t filled = prefix_xor32(w < w32 ? toggles[r * w32 + w] : 0u);
      const uint32_t parity = filled >> 31;
      uint32_t scan = parity;
      for (int off = 1; off < 32; off <<= 1) {
        const uint32_t up = __shfl_up_sync(0xffffffffu, scan, off);
        if (lane >= off) scan ^= up;
      }
      if ((scan ^ parity) ^ carry) filled = ~filled;
      if (w < w32) cover[r * w32 + w] |= filled & valid_bits32(w, width);
      carry ^= __shfl_sync(0xffffffffu, scan, 31);
    }
  }
}

__device__ void coco_toggles(const RasterizeParams& p, const double* v, int64_t n, int64_t r0, int rows, int w32,
                             uint32_t* toggles, uint32_t* state) {
  for (int64_t i = 0; i < n; ++i) {
    const double* a = v + 2 * i;
    const double* b = v + 2 * ((i + 1) % n);
    const CocoEdge e = coco_edge(coco_grid(a[0]), coco_grid(a[1]), coco_grid(b[0]), coco_grid(b[1]));
    int64_t first, count;
    coco_columns(e, p.width, &first, &count);
    for (int64_t j = threadIdx.x; j < count; j += blockDim.x) {
      const int64_t x = first + j;
      const int64_t ty = coco_toggle_row(e, x, p.height);
      const uint32_t bit = 1u << (x % 32);
      if (ty < r0)
        atomicXor(&state[x / 32], bit);
      else if (ty < r0 + rows)
        atomicXor(&toggles[(ty - r0) * w32 + x / 32], bit);
    }
  }
}

__device__ void coco_fill(int rows, int w32, const uint32_t* toggles, const uint32_t* state, uint32_t* cover) {
  for (int w = threadIdx.x; w < w32; w += blockDim.x) {
    uint32_t s = state[w];
    for (int r = 0; r < rows; ++r) {
      s ^= toggles[r * w32 + w];
      cover[r * w32 + w] |= s;
    }
  }
}

__device__ void write_tile(const RasterizeParams& p, int64_t mask, int64_t r0, int rows, int w32,
                           const uint32_t* cover) {
  if (p.packed) {  // rows of one mask are contiguous: the tile is one linear run of words
    uint32_t* dst =
        reinterpret_cast<uint32_t*>(static_cast<uint8_t*>(p.out) + (mask * p.height + r0) * p.row_words * 8);
    for (int i = threadIdx.x; i < rows * w32; i += blockDim.x) dst[i] = cover[i];
    return;
  }
  uint8_t* dst = static_cast<uint8_t*>(p.out) + (mask * p.height + r0) * p.width;
  const int64_t pixels = rows * p.width;
  if (p.width % 16 == 0) {  // 16 pixels per thread, one 16-byte store
    for (int64_t q = 16 * (int64_t)threadIdx.x; q < pixels; q += 16 * (int64_t)blockDim.x) {
      const int64_t r = q / p.width, x = q % p.width;
      const Bytes16 b = expand16(cover[r * w32 + x / 32] >> (x % 32));
      *reinterpret_cast<uint4*>(dst + q) =
          make_uint4((uint32_t)b.lo, (uint32_t)(b.lo >> 32), (uint32_t)b.hi, (uint32_t)(b.hi >> 32));
    }
  } else {
    for (int64_t q = threadIdx.x; q < pixels; q += blockDim.x) {
      const int64_t r = q / p.width, x = q % p.width;
      dst[q] = (cover[r * w32 + x / 32] >> (x % 32)) & 1u;
    }
  }
}

__global__ void __launch_bounds__(kThreads) rasterize_kernel(RasterizeParams p, int rows_per_block, int64_t chunks) {
  extern __shared__ uint32_t smem[];
  const int w32 = (int)(2 * p.row_words);
  const int64_t mask = blockIdx.x / chunks;
  const int64_t r0 = (blockIdx.x % chunks) * rows_per_block;
  const int rows = (int)min((int64_t)rows_per_block, p.height - r0);
  uint32_t* toggles = smem;
  uint32_t* cover = toggles + rows_per_block * w32;
  uint32_t* state = cover + rows_per_block * w32;
  for (int i = threadIdx.x; i < rows * w32; i += blockDim.x) cover[i] = 0;
  for (int64_t poly = p.mask_offsets[mask]; poly < p.mask_offsets[mask + 1]; ++poly) {
    for (int i = threadIdx.x; i < rows * w32; i += blockDim.x) toggles[i] = 0;
    for (int i = threadIdx.x; i < w32; i += blockDim.x) state[i] = 0;
    __syncthreads();
    const double* v = p.vertices + poly * p.max_vertices * 2;
    const int64_t n = p.lengths[poly];
    if (p.rule == RasterRule::kCenter)
      center_toggles(p, v, n, r0, rows, w32, toggles);
    else
      coco_toggles(p, v, n, r0, rows, w32, toggles, state);
    __syncthreads();
    if (p.rule == RasterRule::kCenter)
      center_fill(p.width, rows, w32, toggles, cover);
    else
      coco_fill(rows, w32, toggles, state, cover);
    __syncthreads();
  }
  __syncthreads();  // a mask without polygons has not synchronised since cover was cleared
  write_tile(p, mask, r0, rows, w32, cover);
}

int rows_per_block(int64_t w32) {
  // toggles and cover tiles plus one state row must fit in kSmemWords
  return (int)min_of<int64_t>(kMaxRows, (kSmemWords - w32) / (2 * w32));
}

}  // namespace

int64_t rasterize_cuda_max_width() { return (int64_t)32 * (kSmemWords / 3); }

int rasterize_cuda_launch(const RasterizeParams& p, void* stream) {
  if (p.num_masks == 0 || p.height == 0 || p.width == 0) return 0;
  const int64_t w32 = 2 * p.row_words;
  const int rows = rows_per_block(w32);
  if (rows < 1) return -1;
  const int64_t chunks = (p.height + rows - 1) / rows;
  const int64_t blocks = p.num_masks * chunks;
  if (blocks > 0x7fffffffLL) return -1;
  const size_t smem = sizeof(uint32_t) * (size_t)(2 * rows * w32 + w32);
  rasterize_kernel<<<(unsigned)blocks, kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p, rows, chunks);
  return (int)cudaGetLastError();
}

}  // namespace segfast
