// Op segfast::mask_intersections: |A_i ∩ B_j| for packed masks, pairwise (N, M) or matched (N,),
// as int64. Schema, CPU and CUDA implementations.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/word_aligned.h"
#include "overlap/overlap.h"

#if defined(SEGFAST_WITH_CUDA)
#include "common/cuda_check.h"
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace segfast {
namespace {

OverlapParams make_params(const at::Tensor& a, const at::Tensor& b, bool matched, at::Tensor& out) {
  TORCH_CHECK(a.scalar_type() == at::kByte && b.scalar_type() == at::kByte && a.is_contiguous() && b.is_contiguous(),
              "segfast::mask_intersections: a and b must be contiguous packed uint8 masks");
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(1) == b.size(1) && a.size(2) == b.size(2) && a.size(2) % 8 == 0,
              "segfast::mask_intersections: a and b must be (N, H, 8k) and (M, H, 8k) packed masks");
  TORCH_CHECK(a.device() == b.device(), "segfast::mask_intersections: a and b must share a device");
  TORCH_CHECK(!matched || a.size(0) == b.size(0), "segfast::mask_intersections: matched needs as many b as a");
  out = matched ? at::empty({a.size(0)}, a.options().dtype(at::kLong))
                : at::zeros({a.size(0), b.size(0)}, a.options().dtype(at::kLong));
  OverlapParams p;
  p.a = word_aligned(a, "segfast::mask_intersections", "a");
  p.b = word_aligned(b, "segfast::mask_intersections", "b");
  p.n = a.size(0);
  p.m = b.size(0);
  p.words = a.size(1) * a.size(2) / 8;
  p.out = out.data_ptr<int64_t>();
  return p;
}

at::Tensor intersections_cpu(const at::Tensor& a, const at::Tensor& b, bool matched) {
  at::Tensor out;
  OverlapParams p = make_params(a, b, matched, out);
  if (matched) {
    at::parallel_for(0, p.n, 16, [&](int64_t s, int64_t e) { overlap_matched_cpu(p, s, e); });
  } else {
    const int64_t blocks = (p.n + kOverlapRowBlock - 1) / kOverlapRowBlock;
    at::parallel_for(0, blocks, 1, [&](int64_t s, int64_t e) {
      overlap_pairwise_cpu(p, s * kOverlapRowBlock, std::min(p.n, e * kOverlapRowBlock));
    });
  }
  return out;
}

#if defined(SEGFAST_WITH_CUDA)
at::Tensor intersections_cuda(const at::Tensor& a, const at::Tensor& b, bool matched) {
  c10::cuda::CUDAGuard guard(a.device());
  at::Tensor out;
  OverlapParams p = make_params(a, b, matched, out);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  check_launch(matched ? overlap_matched_cuda_launch(p, stream) : overlap_pairwise_cuda_launch(p, stream),
               "segfast::mask_intersections");
  return out;
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(segfast, m) { m.def("mask_intersections(Tensor a, Tensor b, bool matched) -> Tensor"); }

TORCH_LIBRARY_IMPL(segfast, CPU, m) { m.impl("mask_intersections", &intersections_cpu); }

#if defined(SEGFAST_WITH_CUDA)
TORCH_LIBRARY_IMPL(segfast, CUDA, m) { m.impl("mask_intersections", &intersections_cuda); }
#endif

}  // namespace segfast
