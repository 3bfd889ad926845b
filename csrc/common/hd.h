// Helpers shared by host (g++) and device (nvcc) code. No torch here.
#pragma once

#if defined(__CUDACC__)
#define SEGFAST_HD __host__ __device__ __forceinline__
#else
#define SEGFAST_HD inline
#endif

namespace segfast {

// Correctly rounded double multiply and add that the compiler may not fuse into an FMA:
// rasterization must reproduce its references (and pycocotools) bit for bit. Host code is
// also compiled with -ffp-contract=off and device code with --fmad=false.
SEGFAST_HD double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

SEGFAST_HD double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

template <typename T>
SEGFAST_HD T min_of(T a, T b) {
  return a < b ? a : b;
}
template <typename T>
SEGFAST_HD T max_of(T a, T b) {
  return a < b ? b : a;
}

// Floor division for possibly negative numerators, positive denominators.
SEGFAST_HD long long floor_div(long long a, long long b) {
  long long q = a / b;
  return (q * b > a) ? q - 1 : q;
}

}  // namespace segfast
