// Op segfast::mask_grid_weights: packed masks -> (N, h, w) float32 grid weights through banded
// separable resampling tables (built in segfast/ops/pooling.py). Schema, CPU and CUDA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/bits.h"

#include "common/word_aligned.h"
#include "pooling/grid_weights.h"

#if defined(SEGFAST_WITH_CUDA)
#include "common/cuda_check.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace segfast {
namespace {

constexpr const char* kOp = "segfast::mask_grid_weights";

// One axis' band table: starts and counts (int64, (n,)) and zero-padded weights (float32, (n, L)).
void check_bands(const at::Tensor& start, const at::Tensor& count, const at::Tensor& weights, int64_t n_in,
                 const at::Tensor& masks, const char* axis) {
  for (const at::Tensor* t : {&start, &count})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->dim() == 1 && t->numel() == weights.size(0),
                kOp, ": ", axis, " band starts and counts must be contiguous int64 (n,)");
  TORCH_CHECK(weights.scalar_type() == at::kFloat && weights.is_contiguous() && weights.dim() == 2, kOp, ": ", axis,
              " band weights must be contiguous float32 (n, L)");
  for (const at::Tensor* t : {&start, &count, &weights})
    TORCH_CHECK(t->device() == masks.device(), kOp, ": band tables must be on the masks' device");
  if (start.device().is_cpu() && start.numel()) {  // CUDA tables come from the same Python code
    const int64_t* s = start.data_ptr<int64_t>();
    const int64_t* c = count.data_ptr<int64_t>();
    for (int64_t i = 0; i < start.numel(); ++i)
      TORCH_CHECK(s[i] >= 0 && c[i] >= 0 && c[i] <= weights.size(1) && s[i] + c[i] <= n_in, kOp, ": ", axis, " band ",
                  i, " [", s[i], ", ", s[i] + c[i], ") does not fit ", n_in, " pixels and ", weights.size(1),
                  " weights");
  }
}

GridWeightsParams make_params(const at::Tensor& masks, int64_t width, const at::Tensor& row_start,
                              const at::Tensor& row_count, const at::Tensor& row_weights, const at::Tensor& col_start,
                              const at::Tensor& col_count, const at::Tensor& col_weights, const at::Tensor& col_uniform,
                              at::Tensor& out) {
  TORCH_CHECK(masks.scalar_type() == at::kByte && masks.is_contiguous() && masks.dim() == 3 &&
                  masks.size(2) == 8 * packed_row_words(width),
              kOp, ": masks must be contiguous packed (N, H, 8 * ceil(width / 64)) uint8");
  check_bands(row_start, row_count, row_weights, masks.size(1), masks, "row");
  check_bands(col_start, col_count, col_weights, width, masks, "column");
  TORCH_CHECK(col_uniform.scalar_type() == at::kByte && col_uniform.is_contiguous() &&
                  col_uniform.numel() == col_start.numel() && col_uniform.device() == masks.device(),
              kOp, ": col_uniform must be contiguous uint8 (out_w,) on the masks' device");
  GridWeightsParams p;
  p.n = masks.size(0);
  p.height = masks.size(1);
  p.width = width;
  p.row_words = masks.size(2) / 8;
  p.out_h = row_start.size(0);
  p.out_w = col_start.size(0);
  p.row_start = row_start.data_ptr<int64_t>();
  p.row_count = row_count.data_ptr<int64_t>();
  p.row_weights = row_weights.data_ptr<float>();
  p.row_len = row_weights.size(1);
  p.col_start = col_start.data_ptr<int64_t>();
  p.col_count = col_count.data_ptr<int64_t>();
  p.col_weights = col_weights.data_ptr<float>();
  p.col_uniform = col_uniform.data_ptr<uint8_t>();
  p.col_len = col_weights.size(1);
  p.masks = word_aligned(masks, kOp, "masks");
  out = at::empty({p.n, p.out_h, p.out_w}, masks.options().dtype(at::kFloat));
  p.out = out.data_ptr<float>();
  return p;
}

at::Tensor grid_weights_cpu_op(const at::Tensor& masks, int64_t width, const at::Tensor& row_start,
                               const at::Tensor& row_count, const at::Tensor& row_weights, const at::Tensor& col_start,
                               const at::Tensor& col_count, const at::Tensor& col_weights,
                               const at::Tensor& col_uniform) {
  at::Tensor out;
  GridWeightsParams p =
      make_params(masks, width, row_start, row_count, row_weights, col_start, col_count, col_weights, col_uniform, out);
  at::parallel_for(0, p.n, 1, [&](int64_t b, int64_t e) { grid_weights_cpu(p, b, e); });
  return out;
}

#if defined(SEGFAST_WITH_CUDA)
at::Tensor grid_weights_cuda_op(const at::Tensor& masks, int64_t width, const at::Tensor& row_start,
                                const at::Tensor& row_count, const at::Tensor& row_weights, const at::Tensor& col_start,
                                const at::Tensor& col_count, const at::Tensor& col_weights,
                                const at::Tensor& col_uniform) {
  c10::cuda::CUDAGuard guard(masks.device());
  at::Tensor out;
  GridWeightsParams p =
      make_params(masks, width, row_start, row_count, row_weights, col_start, col_count, col_weights, col_uniform, out);
  check_launch(grid_weights_cuda_launch(p, c10::cuda::getCurrentCUDAStream().stream()), kOp);
  return out;
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) {
  m.def(
      "mask_grid_weights(Tensor masks, int width, Tensor row_start, Tensor row_count, Tensor row_weights, "
      "Tensor col_start, Tensor col_count, Tensor col_weights, Tensor col_uniform) -> Tensor");
}

TORCH_LIBRARY_IMPL(segfast, CPU, m) { m.impl("mask_grid_weights", &grid_weights_cpu_op); }

#if defined(SEGFAST_WITH_CUDA)
TORCH_LIBRARY_IMPL(segfast, CUDA, m) { m.impl("mask_grid_weights", &grid_weights_cuda_op); }
#endif

}  // namespace segfast
