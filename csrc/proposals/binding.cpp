// Op segfast::binarize_logits: schema, CPU and CUDA implementations.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/bits.h"

#include <climits>

#include "proposals/binarize.h"

#if defined(SEGFAST_WITH_CUDA)
#include "common/cuda_check.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace segfast {
namespace {

struct Outputs {
  at::Tensor packed, counts, boxes;
};

// Checks the call and allocates the outputs.
Outputs prepare(const at::Tensor& logits, int64_t height, int64_t width, int64_t top, int64_t left, BinarizeParams& p) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && logits.is_contiguous() && logits.dim() == 3,
              "segfast::binarize_logits: logits must be contiguous float32 of shape (N, h, w)");
  TORCH_CHECK(top >= 0 && left >= 0 && top + logits.size(1) <= height && left + logits.size(2) <= width,
              "segfast::binarize_logits: the (h, w) logits placed at (top, left) must fit the canvas");
  TORCH_CHECK(height < INT_MAX && width < INT_MAX && logits.size(1) * logits.size(2) < INT_MAX,
              "segfast::binarize_logits: masks must have fewer than 2^31 pixels per side and per map");
  p.n = logits.size(0), p.h = logits.size(1), p.w = logits.size(2);
  p.height = height, p.width = width, p.row_words = packed_row_words(width), p.top = top, p.left = left;
  Outputs o;
  o.packed = at::empty({p.n, height, 8 * p.row_words}, logits.options().dtype(at::kByte));
  o.counts = at::empty({p.n, 3}, logits.options().dtype(at::kInt));
  o.boxes = at::empty({p.n, 4}, logits.options().dtype(at::kInt));
  p.logits = logits.data_ptr<float>();
  p.packed = o.packed.data_ptr<uint8_t>();
  p.counts = o.counts.data_ptr<int32_t>();
  p.boxes = o.boxes.data_ptr<int32_t>();
  return o;
}

void set_thresholds(BinarizeParams& p, double hi, double lo, double mid) {
  // The comparisons happen in float32, as PyTorch compares a float32 tensor with a Python float.
  p.hi = (float)hi, p.lo = (float)lo, p.mid = (float)mid;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> binarize_cpu(const at::Tensor& logits, double hi, double lo, double mid,
                                                            int64_t height, int64_t width, int64_t top, int64_t left) {
  BinarizeParams p;
  Outputs o = prepare(logits, height, width, top, left, p);
  set_thresholds(p, hi, lo, mid);
  at::parallel_for(0, p.n, 1, [&](int64_t b, int64_t e) { binarize_masks_cpu(p, b, e); });
  return {o.packed, o.counts, o.boxes.to(at::kLong)};
}

#if defined(SEGFAST_WITH_CUDA)
std::tuple<at::Tensor, at::Tensor, at::Tensor> binarize_cuda(const at::Tensor& logits, double hi, double lo, double mid,
                                                             int64_t height, int64_t width, int64_t top, int64_t left) {
  c10::cuda::CUDAGuard guard(logits.device());
  BinarizeParams p;
  Outputs o = prepare(logits, height, width, top, left, p);
  set_thresholds(p, hi, lo, mid);
  static_assert(sizeof(MaskStats) == 7 * sizeof(int32_t), "MaskStats scratch is allocated as int32");
  at::Tensor row_stats = at::empty({p.n, height, 7}, logits.options().dtype(at::kInt));
  check_launch(binarize_cuda_launch(p, reinterpret_cast<MaskStats*>(row_stats.data_ptr<int32_t>()),
                                    c10::cuda::getCurrentCUDAStream().stream()),
               "segfast::binarize_logits");
  return {o.packed, o.counts, o.boxes.to(at::kLong)};
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) {
  m.def(
      "binarize_logits(Tensor logits, float hi, float lo, float mid, int height, int width, int top, "
      "int left) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(segfast, CPU, m) { m.impl("binarize_logits", &binarize_cpu); }

#if defined(SEGFAST_WITH_CUDA)
TORCH_LIBRARY_IMPL(segfast, CUDA, m) { m.impl("binarize_logits", &binarize_cuda); }
#endif

}  // namespace segfast
