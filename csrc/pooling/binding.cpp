// Op segfast::mask_grid_weights: packed masks -> (N, h, w) float32 grid weights through banded
// separable resampling tables (built in segfast/ops/pooling.py). Schema, CPU and CUDA.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "pooling/grid_weights.h"

#if defined(SEGFAST_WITH_CUDA)
#include "common/cuda_check.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace segfast {
namespace {

GridWeightsParams make_params(const at::Tensor& masks, int64_t width, const at::Tensor& row_start,
                              const at::Tensor& row_weights, const at::Tensor& col_start,
                              const at::Tensor& col_weights, const at::Tensor& col_uniform, at::Tensor& out) {
  TORCH_CHECK(masks.scalar_type() == at::kByte && masks.is_contiguous() && masks.dim() == 3 &&
                  masks.size(2) == 8 * ((width + 63) / 64),
              "segfast::mask_grid_weights: masks must be contiguous packed (N, H, 8 * ceil(width / 64)) uint8");
  for (const at::Tensor* t : {&row_start, &col_start})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->dim() == 1, "band starts must be int64 (n,)");
  for (const at::Tensor* t : {&row_weights, &col_weights})
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->dim() == 2, "band weights must be float32 (n, L)");
  TORCH_CHECK(row_weights.size(0) == row_start.size(0) && col_weights.size(0) == col_start.size(0) &&
                  col_uniform.numel() == col_start.size(0) && col_uniform.scalar_type() == at::kByte,
              "segfast::mask_grid_weights: band tables disagree in size");
  for (const at::Tensor* t : {&row_start, &row_weights, &col_start, &col_weights, &col_uniform})
    TORCH_CHECK(t->device() == masks.device(), "segfast::mask_grid_weights: tables must be on the masks' device");
  GridWeightsParams p;
  p.n = masks.size(0);
  p.height = masks.size(1);
  p.width = width;
  p.row_words = masks.size(2) / 8;
  p.out_h = row_start.size(0);
  p.out_w = col_start.size(0);
  p.row_start = row_start.data_ptr<int64_t>();
  p.row_weights = row_weights.data_ptr<float>();
  p.row_len = row_weights.size(1);
  p.col_start = col_start.data_ptr<int64_t>();
  p.col_weights = col_weights.data_ptr<float>();
  p.col_uniform = col_uniform.data_ptr<uint8_t>();
  p.col_len = col_weights.size(1);
  p.masks = static_cast<const uint64_t*>(masks.data_ptr());
  out = at::empty({p.n, p.out_h, p.out_w}, masks.options().dtype(at::kFloat));
  p.out = out.data_ptr<float>();
  return p;
}

at::Tensor grid_weights_cpu_op(const at::Tensor& masks, int64_t width, const at::Tensor& row_start,
                               const at::Tensor& row_weights, const at::Tensor& col_start,
                               const at::Tensor& col_weights, const at::Tensor& col_uniform) {
  at::Tensor out;
  GridWeightsParams p = make_params(masks, width, row_start, row_weights, col_start, col_weights, col_uniform, out);
  at::parallel_for(0, p.n, 1, [&](int64_t b, int64_t e) { grid_weights_cpu(p, b, e); });
  return out;
}

#if defined(SEGFAST_WITH_CUDA)
at::Tensor grid_weights_cuda_op(const at::Tensor& masks, int64_t width, const at::Tensor& row_start,
                                const at::Tensor& row_weights, const at::Tensor& col_start,
                                const at::Tensor& col_weights, const at::Tensor& col_uniform) {
  c10::cuda::CUDAGuard guard(masks.device());
  at::Tensor out;
  GridWeightsParams p = make_params(masks, width, row_start, row_weights, col_start, col_weights, col_uniform, out);
  check_launch(grid_weights_cuda_launch(p, c10::cuda::getCurrentCUDAStream().stream()), "segfast::mask_grid_weights");
  return out;
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) {
  m.def(
      "mask_grid_weights(Tensor masks, int width, Tensor row_start, Tensor row_weights, Tensor col_start, "
      "Tensor col_weights, Tensor col_uniform) -> Tensor");
}

TORCH_LIBRARY_IMPL(segfast, CPU, m) { m.impl("mask_grid_weights", &grid_weights_cpu_op); }

#if defined(SEGFAST_WITH_CUDA)
TORCH_LIBRARY_IMPL(segfast, CUDA, m) { m.impl("mask_grid_weights", &grid_weights_cuda_op); }
#endif

}  // namespace segfast
