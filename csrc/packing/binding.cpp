// Ops segfast::pack_masks and segfast::unpack_masks: schema, CPU and CUDA implementations.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/bits.h"

#include "common/word_aligned.h"
#include "packing/packing.h"

#if defined(SEGFAST_WITH_CUDA)
#include "common/cuda_check.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace segfast {
namespace {

std::vector<int64_t> with_last(const at::Tensor& t, int64_t last) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape.back() = last;
  return shape;
}

PackParams pack_params(const at::Tensor& masks, const at::Tensor& packed, int64_t width) {
  PackParams p;
  p.dense = static_cast<const uint8_t*>(masks.data_ptr());
  p.packed = static_cast<uint8_t*>(packed.data_ptr());
  p.width = width;
  p.row_words = packed_row_words(width);
  p.rows = width ? masks.numel() / width : packed.numel() / std::max<int64_t>(1, 8 * p.row_words);
  return p;
}

void check_pack(const at::Tensor& masks) {
  TORCH_CHECK(masks.scalar_type() == at::kBool && masks.is_contiguous() && masks.dim() >= 2,
              "segfast::pack_masks: masks must be contiguous bool of shape (..., H, W)");
}

void check_unpack(const at::Tensor& packed, int64_t width) {
  TORCH_CHECK(packed.scalar_type() == at::kByte && packed.is_contiguous() && packed.dim() >= 2 &&
                  packed.size(-1) == 8 * packed_row_words(width),
              "segfast::unpack_masks: packed must be contiguous uint8 of shape (..., H, 8 * ceil(width / 64))");
  word_aligned(packed, "segfast::unpack_masks", "packed");
}

at::Tensor pack_cpu(const at::Tensor& masks) {
  check_pack(masks);
  const int64_t width = masks.size(-1);
  at::Tensor packed = at::empty(with_last(masks, 8 * packed_row_words(width)), masks.options().dtype(at::kByte));
  PackParams p = pack_params(masks, packed, width);
  at::parallel_for(0, p.rows, 64, [&](int64_t b, int64_t e) { pack_rows_cpu(p, b, e); });
  return packed;
}

at::Tensor unpack_cpu(const at::Tensor& packed, int64_t width) {
  check_unpack(packed, width);
  at::Tensor masks = at::empty(with_last(packed, width), packed.options().dtype(at::kBool));
  PackParams p = pack_params(masks, packed, width);
  at::parallel_for(0, p.rows, 64, [&](int64_t b, int64_t e) { unpack_rows_cpu(p, b, e); });
  return masks;
}

#if defined(SEGFAST_WITH_CUDA)
at::Tensor pack_cuda(const at::Tensor& masks) {
  check_pack(masks);
  c10::cuda::CUDAGuard guard(masks.device());
  const int64_t width = masks.size(-1);
  at::Tensor packed = at::empty(with_last(masks, 8 * packed_row_words(width)), masks.options().dtype(at::kByte));
  check_launch(pack_cuda_launch(pack_params(masks, packed, width), c10::cuda::getCurrentCUDAStream().stream()),
               "segfast::pack_masks");
  return packed;
}

at::Tensor unpack_cuda(const at::Tensor& packed, int64_t width) {
  check_unpack(packed, width);
  c10::cuda::CUDAGuard guard(packed.device());
  at::Tensor masks = at::empty(with_last(packed, width), packed.options().dtype(at::kBool));
  check_launch(unpack_cuda_launch(pack_params(masks, packed, width), c10::cuda::getCurrentCUDAStream().stream()),
               "segfast::unpack_masks");
  return masks;
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) {
  m.def("pack_masks(Tensor masks) -> Tensor");
  m.def("unpack_masks(Tensor packed, int width) -> Tensor");
}

TORCH_LIBRARY_IMPL(segfast, CPU, m) {
  m.impl("pack_masks", &pack_cpu);
  m.impl("unpack_masks", &unpack_cpu);
}

#if defined(SEGFAST_WITH_CUDA)
TORCH_LIBRARY_IMPL(segfast, CUDA, m) {
  m.impl("pack_masks", &pack_cuda);
  m.impl("unpack_masks", &unpack_cuda);
}
#endif

}  // namespace segfast
