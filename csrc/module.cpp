// The Python module segfast._C. Importing it registers every op with the dispatcher (the
// TORCH_LIBRARY blocks in the per-op binding files); it also reports how it was built.
#include <pybind11/pybind11.h>

#include "overlap/overlap.h"
#include "pooling/grid_weights.h"
#include "rasterize/rasterize.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "segfast native ops (registered under torch.ops.segfast)";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = SEGFAST_VERSION;
    info["cpu_popcount"] = segfast::overlap_cpu_isa();
#if defined(SEGFAST_WITH_CUDA)
    info["cuda"] = true;
    info["cuda_max_raster_width"] = segfast::rasterize_cuda_max_width();
    info["cuda_max_pool_band"] = segfast::grid_weights_cuda_max_band();
#else
    info["cuda"] = false;
#endif
    return info;
  });
}
