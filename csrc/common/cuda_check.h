// Turns a torch-free launcher's return code into a torch error: negative = the inputs do not
// fit the kernel (with `what` saying which op), positive = a CUDA error.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

namespace segfast {

inline void check_launch(int err, const char* what) {
  TORCH_CHECK(err >= 0, what, ": the inputs do not fit the CUDA kernel's limits");
  C10_CUDA_CHECK(static_cast<cudaError_t>(err));
}

}  // namespace segfast
