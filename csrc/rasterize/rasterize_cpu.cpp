// CPU polygon rasterizer (torch-free). One work item fills a chunk of rows of one mask:
// per polygon, crossings become toggle bits in a small row-bit tile, a prefix-XOR turns toggles
// into coverage, polygons of the mask are OR-ed, and each row is written to the output exactly
// once (as bits, or expanded to bytes), so the output memory is touched a single time.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/bits.h"
#include "rasterize/rasterize.h"

namespace segfast {
namespace {

using Word = uint64_t;
constexpr int kBits = 64;

inline void toggle(Word* row, int64_t x) { row[x / kBits] ^= Word{1} << (x % kBits); }

// Bit tiles of one work item. Toggles are cleared back to zero after each polygon, only over
// the rows it touched, so a polygon costs its own rows, not the tile's.
struct Tile {
  int64_t rows = 0, words = 0;
  std::vector<Word> toggles, cover, state;
  int64_t lo = 0, hi = 0;              // rows [lo, hi) of the current polygon hold toggles
  int64_t cover_lo = 0, cover_hi = 0;  // rows [cover_lo, cover_hi) may hold coverage
  void reset(int64_t r, int64_t w) {
    if (r * w > (int64_t)toggles.size()) toggles.assign(r * w, 0);
    rows = r;
    words = w;
    cover.assign(r * w, 0);
    state.assign(w, 0);
    cover_lo = r;
    cover_hi = 0;
  }
  Word* toggle_row(int64_t r) {
    lo = std::min(lo, r);
    hi = std::max(hi, r + 1);
    return &toggles[r * words];
  }
  void begin_polygon() {
    lo = rows;
    hi = 0;
  }
  void end_polygon(int64_t first_row, int64_t end_row) {  // rows that received coverage
    std::fill(toggles.begin() + lo * words, toggles.begin() + std::max(lo, hi) * words, 0);
    if (first_row < end_row) {
      cover_lo = std::min(cover_lo, first_row);
      cover_hi = std::max(cover_hi, end_row);
    }
  }
};

// Center rule: horizontal crossings toggle the first column right of them; prefix-XOR fills.
void center_polygon(const RasterizeParams& p, const double* v, int64_t n, int64_t r0, Tile& t) {
  t.begin_polygon();
  const int64_t r1 = r0 + t.rows;
  for (int64_t i = 0; i < n; ++i) {
    const double* a = v + 2 * i;
    const double* b = v + 2 * ((i + 1) % n);
    if (a[1] == b[1]) continue;
    if (a[1] > b[1]) std::swap(a, b);  // same arithmetic whichever way the edge runs
    // rows whose centre y + 0.5 lies in [ya, yb)
    int64_t ylo = (int64_t)std::max<double>((double)r0, std::ceil(a[1] - 0.5));
    int64_t yhi = (int64_t)std::min<double>((double)r1, std::ceil(b[1] - 0.5));
    for (int64_t y = ylo; y < yhi; ++y) {
      int64_t k = center_first_column(a[0], a[1], b[0], b[1], (double)y + 0.5, p.width);
      if (k < p.width) toggle(t.toggle_row(y - r0), k);
    }
  }
  const Word last_mask = low_bits64(p.width - kBits * (t.words - 1));
  for (int64_t r = t.lo; r < t.hi; ++r) {
    const Word* tog = &t.toggles[r * t.words];
    Word* cov = &t.cover[r * t.words];
    Word carry = 0;
    for (int64_t w = 0; w < t.words; ++w) {
      Word filled = prefix_xor64(tog[w]) ^ carry;
      carry = (filled >> (kBits - 1)) ? ~Word{0} : 0;
      cov[w] |= filled;
    }
    cov[t.words - 1] &= last_mask;  // never spill past the width into the row padding
  }
  t.end_polygon(t.lo, t.hi);
}

// Coco rule: column toggles from rleFrPoly's trace; rows above the chunk seed the state.
void coco_polygon(const RasterizeParams& p, const double* v, int64_t n, int64_t r0, Tile& t) {
  t.begin_polygon();
  std::fill(t.state.begin(), t.state.end(), 0);
  bool seeded = false;
  const int64_t r1 = r0 + t.rows;
  for (int64_t i = 0; i < n; ++i) {
    const double* a = v + 2 * i;
    const double* b = v + 2 * ((i + 1) % n);
    CocoEdge e = coco_edge(coco_grid(a[0]), coco_grid(a[1]), coco_grid(b[0]), coco_grid(b[1]));
    int64_t first, count;
    coco_columns(e, p.width, &first, &count);
    for (int64_t x = first; x < first + count; ++x) {
      int64_t ty = coco_toggle_row(e, x, p.height);
      if (ty < r0) {
        toggle(t.state.data(), x);
        seeded = true;
      } else if (ty < r1)
        toggle(t.toggle_row(ty - r0), x);
    }
  }
  // coverage runs from the first toggled row (or the top, when seeded) down to the chunk's end
  const int64_t first_row = seeded ? 0 : t.lo;
  for (int64_t r = first_row; r < t.rows; ++r) {
    const Word* tog = &t.toggles[r * t.words];
    Word* cov = &t.cover[r * t.words];
    for (int64_t w = 0; w < t.words; ++w) {
      t.state[w] ^= tog[w];
      cov[w] |= t.state[w];
    }
  }
  t.end_polygon(first_row, t.rows);
}

void write_rows(const RasterizeParams& p, int64_t mask, int64_t r0, const Tile& t) {
  const int64_t row_bytes = p.packed ? p.row_words * 8 : p.width;
  uint8_t* base = static_cast<uint8_t*>(p.out) + (mask * p.height + r0) * row_bytes;
  // rows without coverage are plain zeros
  if (t.cover_lo >= t.cover_hi) {
    std::memset(base, 0, t.rows * row_bytes);
    return;
  }
  std::memset(base, 0, t.cover_lo * row_bytes);
  std::memset(base + t.cover_hi * row_bytes, 0, (t.rows - t.cover_hi) * row_bytes);
  if (p.packed) {  // little-endian words == little bit order bytes, padding included
    std::memcpy(base + t.cover_lo * row_bytes, &t.cover[t.cover_lo * t.words], (t.cover_hi - t.cover_lo) * row_bytes);
    return;
  }
  for (int64_t r = t.cover_lo; r < t.cover_hi; ++r)
    expand_row(reinterpret_cast<const uint8_t*>(&t.cover[r * t.words]), p.width, base + r * row_bytes);
}

}  // namespace

int64_t rasterize_cpu_num_items(const RasterizeParams& p) {
  if (p.height == 0) return 0;
  return p.num_masks * ((p.height + p.rows_per_chunk - 1) / p.rows_per_chunk);
}

void rasterize_cpu_items(const RasterizeParams& p, int64_t begin, int64_t end) {
  const int64_t chunks = (p.height + p.rows_per_chunk - 1) / p.rows_per_chunk;
  thread_local Tile tile;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t mask = item / chunks;
    const int64_t r0 = (item % chunks) * p.rows_per_chunk;
    const int64_t rows = std::min(p.rows_per_chunk, p.height - r0);
    tile.reset(rows, p.row_words);
    for (int64_t poly = p.mask_offsets[mask]; poly < p.mask_offsets[mask + 1]; ++poly) {
      const double* v = p.vertices + poly * p.max_vertices * 2;
      if (p.rule == RasterRule::kCenter)
        center_polygon(p, v, p.lengths[poly], r0, tile);
      else
        coco_polygon(p, v, p.lengths[poly], r0, tile);
    }
    write_rows(p, mask, r0, tile);
  }
}

}  // namespace segfast
