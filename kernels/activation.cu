// ReLU with Caffe's negative_slope (leaky ReLU): y = x > 0 ? x : x * slope.
#include "common.cuh"

// y[i] = x[i] > 0 ? x[i] : x[i] * negative_slope.
// 1-D launch over count; x and y are any same-size contiguous arrays (y may alias x).
template <typename T>
__global__ void relu_forward(const int count, const T* x, const T negative_slope, T* y) {
  CUDA_KERNEL_LOOP(i, count) {
    const T v = x[i];
    y[i] = v > T(0) ? v : v * negative_slope;
  }
}

// dx[i] = x[i] > 0 ? dy[i] : dy[i] * negative_slope.  `x` may be the forward output (in-place
// ReLU): for negative_slope >= 0 its sign is the input's.
// 1-D launch over count; dx may alias dy.
template <typename T>
__global__ void relu_backward(const int count, const T* x, const T* dy, const T negative_slope, T* dx) {
  CUDA_KERNEL_LOOP(i, count) {
    const T g = dy[i];
    dx[i] = x[i] > T(0) ? g : g * negative_slope;
  }
}
