// Op segfast::rasterize_polygons: schema, CPU and CUDA implementations. Inputs arrive
// validated and canonical from segfast/ops/rasterize.py; the checks here guard the contract.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/bits.h"

#include "common/huge_pages.h"
#include "rasterize/rasterize.h"

#if defined(SEGFAST_WITH_CUDA)
#include "common/cuda_check.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace segfast {
namespace {

RasterRule parse_rule(c10::string_view rule) {
  if (rule == "center") return RasterRule::kCenter;
  if (rule == "coco") return RasterRule::kCoco;
  TORCH_CHECK(false, "segfast::rasterize_polygons: rule must be 'center' or 'coco', got '", std::string(rule), "'");
}

RasterizeParams make_params(const at::Tensor& vertices, const at::Tensor& lengths, const at::Tensor& mask_offsets,
                            int64_t height, int64_t width, c10::string_view rule, bool packed) {
  TORCH_CHECK(vertices.dim() == 3 && vertices.size(2) == 2, "vertices must be (N, V, 2)");
  TORCH_CHECK(vertices.scalar_type() == at::kDouble && vertices.is_contiguous(), "vertices must be contiguous float64");
  TORCH_CHECK(lengths.scalar_type() == at::kLong && lengths.is_contiguous() && lengths.numel() == vertices.size(0),
              "lengths must be contiguous int64 of shape (N,)");
  TORCH_CHECK(mask_offsets.scalar_type() == at::kLong && mask_offsets.is_contiguous() && mask_offsets.numel() >= 1,
              "mask_offsets must be contiguous int64 of shape (num_masks + 1,)");
  TORCH_CHECK(lengths.device() == vertices.device() && mask_offsets.device() == vertices.device(),
              "vertices, lengths and mask_offsets must share a device");
  TORCH_CHECK(height >= 0 && width >= 0, "height and width must be >= 0");
  RasterizeParams p;
  p.vertices = vertices.data_ptr<double>();
  p.lengths = lengths.data_ptr<int64_t>();
  p.mask_offsets = mask_offsets.data_ptr<int64_t>();
  p.num_masks = mask_offsets.numel() - 1;
  p.max_vertices = vertices.size(1);
  p.height = height;
  p.width = width;
  p.rule = parse_rule(rule);
  p.packed = packed;
  p.row_words = packed_row_words(width);
  return p;
}

at::Tensor empty_output(const RasterizeParams& p, const at::TensorOptions& device) {
  if (p.packed) return at::empty({p.num_masks, p.height, p.row_words * 8}, device.dtype(at::kByte));
  return at::empty({p.num_masks, p.height, p.width}, device.dtype(at::kBool));
}

at::Tensor rasterize_cpu(const at::Tensor& vertices, const at::Tensor& lengths, const at::Tensor& mask_offsets,
                         int64_t height, int64_t width, c10::string_view rule, bool packed) {
  RasterizeParams p = make_params(vertices, lengths, mask_offsets, height, width, rule, packed);
  at::Tensor out = empty_output(p, vertices.options());
  if (out.numel() == 0) return out;
  p.out = out.data_ptr();
  advise_huge_pages(p.out, out.nbytes());
  // Chunks of rows whose bit tiles (8 KiB each) stay in L1, and enough of them to keep every
  // thread busy when there are few masks.
  const int64_t threads = at::get_num_threads();
  // Coco re-traces every edge per chunk, so its chunks are larger (64 KiB tiles, in L2).
  const int64_t tile_bytes = p.rule == RasterRule::kCoco ? 65536 : 8192;
  const int64_t by_cache = std::max<int64_t>(1, tile_bytes / (p.row_words * 8));
  const int64_t by_threads = std::max<int64_t>(1, (p.num_masks * height) / (4 * threads));
  p.rows_per_chunk = std::min<int64_t>({height, by_cache, std::max<int64_t>(16, by_threads)});
  at::parallel_for(0, rasterize_cpu_num_items(p), 1,
                   [&](int64_t begin, int64_t end) { rasterize_cpu_items(p, begin, end); });
  return out;
}

#if defined(SEGFAST_WITH_CUDA)
at::Tensor rasterize_cuda(const at::Tensor& vertices, const at::Tensor& lengths, const at::Tensor& mask_offsets,
                          int64_t height, int64_t width, c10::string_view rule, bool packed) {
  c10::cuda::CUDAGuard guard(vertices.device());
  RasterizeParams p = make_params(vertices, lengths, mask_offsets, height, width, rule, packed);
  TORCH_CHECK(width <= rasterize_cuda_max_width(), "segfast::rasterize_polygons (cuda): width ", width,
              " exceeds the kernel's limit of ", rasterize_cuda_max_width());
  at::Tensor out = empty_output(p, vertices.options());
  if (out.numel() == 0) return out;
  p.out = out.data_ptr();
  check_launch(rasterize_cuda_launch(p, c10::cuda::getCurrentCUDAStream().stream()), "segfast::rasterize_polygons");
  return out;
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) {
  m.def(
      "rasterize_polygons(Tensor vertices, Tensor lengths, Tensor mask_offsets, int height, int width, "
      "str rule, bool packed) -> Tensor");
}

TORCH_LIBRARY_IMPL(segfast, CPU, m) { m.impl("rasterize_polygons", &rasterize_cpu); }

#if defined(SEGFAST_WITH_CUDA)
TORCH_LIBRARY_IMPL(segfast, CUDA, m) { m.impl("rasterize_polygons", &rasterize_cuda); }
#endif

}  // namespace segfast
