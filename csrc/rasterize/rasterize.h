// Polygon rasterization: parameters, shared geometry and the torch-free kernel entry points.
//
// Two fill rules, both even-odd per polygon, polygons of one mask combined by union:
//  * center: pixel (x, y) is inside when its centre (x + 0.5, y + 0.5) is. An edge takes the
//    rows whose centre yc has ya <= yc < yb (half-open), and a pixel counts a crossing xc as
//    left of it when xc <= x + 0.5, so polygons that share an edge never share a pixel.
//  * coco: pycocotools rleFrPoly bit for bit. Vertices go to a 5x grid ((int)(5 v + 0.5)),
//    each edge is traced on that grid, and each crossing of a pixel-centre column (grid
//    column 5x + 2 -> 5x + 3) toggles column x from row ceil(clamp((v + 0.5) / 5 - 0.5, 0, H)).
//    Rows then fill top to bottom by parity: the even-odd rule along columns.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstdlib>

#include "common/hd.h"

namespace segfast {

enum class RasterRule : int32_t { kCenter = 0, kCoco = 1 };

struct RasterizeParams {
  const double* vertices = nullptr;       // (num_polygons, max_vertices, 2) as (x, y), grouped by mask
  const int64_t* lengths = nullptr;       // (num_polygons,) vertices used by each polygon, >= 3
  const int64_t* mask_offsets = nullptr;  // (num_masks + 1,) polygons of mask m: [offsets[m], offsets[m + 1])
  int64_t num_masks = 0;
  int64_t max_vertices = 0;
  int64_t height = 0;
  int64_t width = 0;
  RasterRule rule = RasterRule::kCenter;
  bool packed = false;         // false: bool (M, H, W); true: uint8 (M, H, 8 * row_words)
  int64_t row_words = 0;       // 64-bit words per packed row: ceil(width / 64)
  int64_t rows_per_chunk = 0;  // CPU: rows one work item fills
  void* out = nullptr;
};

// ---- center rule ---------------------------------------------------------------------------

// First pixel column whose centre is at or right of the crossing of edge a -> b (ya < yb) with
// the horizontal line y = yc, clamped to [0, width]. Exact: ceil(xc - 0.5) <= x  <=>  xc <= x + 0.5
// for |xc| < 2^52, and vertices are bounded far below that.
SEGFAST_HD int64_t center_first_column(double xa, double ya, double xb, double yb, double yc, int64_t width) {
  double xc = xa + (yc - ya) * (xb - xa) / (yb - ya);
  double k = ceil(xc - 0.5);
  return k <= 0.0 ? 0 : (k >= (double)width ? width : (int64_t)k);
}

// ---- coco rule (pycocotools maskApi.c rleFrPoly) --------------------------------------------

struct CocoEdge {
  int xs, ys, xe, ye;  // grid endpoints after rleFrPoly's flip
  int dx, dy;
  double s;  // rleFrPoly's slope along the major axis
};

SEGFAST_HD int coco_grid(double v) { return (int)add_rn(mul_rn(5.0, v), 0.5); }

SEGFAST_HD CocoEdge coco_edge(int xs, int ys, int xe, int ye) {
  CocoEdge e;
  e.dx = xe > xs ? xe - xs : xs - xe;
  e.dy = ys > ye ? ys - ye : ye - ys;
  bool flip = (e.dx >= e.dy && xs > xe) || (e.dx < e.dy && ys > ye);
  if (flip) {
    int t = xs;
    xs = xe;
    xe = t;
    t = ys;
    ys = ye;
    ye = t;
  }
  e.xs = xs;
  e.ys = ys;
  e.xe = xe;
  e.ye = ye;
  // dx == dy == 0 gives NaN here, as in rleFrPoly; such an edge has no column crossings.
  e.s = e.dx >= e.dy ? (double)(ye - ys) / e.dx : (double)(xe - xs) / e.dy;
  return e;
}

// One point of rleFrPoly's dense trace along the minor axis: (int)(base + s * t + .5).
SEGFAST_HD int coco_trace(int base, double s, int t) {
  return (int)add_rn(add_rn((double)base, mul_rn(s, (double)t)), 0.5);
}

// Pixel columns [*first, *first + *count) whose centre line the edge's trace crosses.
SEGFAST_HD void coco_columns(const CocoEdge& e, int64_t width, int64_t* first, int64_t* count) {
  long long umin = min_of(e.xs, e.xe), umax = max_of(e.xs, e.xe);
  // grid crossings c -> c + 1 with umin <= c <= umax - 1 and c = 5x + 2
  long long lo = max_of(0LL, floor_div(umin - 2 + 4, 5));
  long long hi = min_of((long long)width - 1, floor_div(umax - 3, 5));
  *first = lo;
  *count = hi >= lo ? hi - lo + 1 : 0;
}

// Row from which the edge toggles pixel column x (one of coco_columns), in [0, height].
SEGFAST_HD int64_t coco_toggle_row(const CocoEdge& e, int64_t x, int64_t height) {
  int c = (int)(5 * x + 2);
  int v;
  if (e.dx >= e.dy) {  // x-major: the trace steps one grid column per point
    int t = c - e.xs;
    v = min_of(coco_trace(e.ys, e.s, t), coco_trace(e.ys, e.s, t + 1));
  } else {  // y-major: the trace steps one grid row per point; find where it passes c -> c + 1
    // u(t) is monotone, so "past the crossing" is false then true along t in [0, dy]. Start at
    // the real-valued solution of xs + s t + 0.5 = c + 1 and step to the exact first true t.
    const bool rising = e.xe > e.xs;
    auto past = [&](int t) {
      const int u = coco_trace(e.xs, e.s, t);
      return rising ? u >= c + 1 : u <= c;
    };
    double guess = ceil(((double)c + 0.5 - (double)e.xs) / e.s);
    int t = guess < 1.0 ? 1 : (guess > (double)e.dy ? e.dy : (int)guess);
    while (t > 1 && past(t - 1)) --t;
    while (t < e.dy && !past(t)) ++t;
    v = e.ys + t - 1;
  }
  double yd = ((double)v + 0.5) / 5.0 - 0.5;
  if (yd < 0)
    yd = 0;
  else if (yd > (double)height)
    yd = (double)height;
  return (int64_t)ceil(yd);
}

// ---- entry points ---------------------------------------------------------------------------

// CPU: work items are (mask, chunk of rows_per_chunk rows), mask-major; fills items [begin, end).
int64_t rasterize_cpu_num_items(const RasterizeParams& p);
void rasterize_cpu_items(const RasterizeParams& p, int64_t begin, int64_t end);

#if defined(SEGFAST_WITH_CUDA)
// Returns the CUDA error of the launch (cudaSuccess == 0) as an int, to keep this header CUDA-free.
// Returns -1 when the width is too large for the kernel's shared-memory tile.
int rasterize_cuda_launch(const RasterizeParams& p, void* stream);
int64_t rasterize_cuda_max_width();
#endif

}  // namespace segfast
