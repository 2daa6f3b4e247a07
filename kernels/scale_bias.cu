// Per-channel scale and shift of an array viewed as (outer, channels, inner): the Scale layer,
// its input gradient, and a convolution's bias add.
#include "common.cuh"

// y[i] = x[i] * scale[c] + bias[c], c = (i / inner) % channels; a null scale or bias is skipped.
// 1-D launch over count = x's size; y may alias x.
template <typename T>
__global__ void scale_bias(const int count, const T* x, const T* scale, const T* bias, const int channels,
                           const int inner, T* y) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / inner) % channels;
    T v = x[i];
    if (scale) v = v * scale[c];
    if (bias) v = v + bias[c];
    y[i] = v;
  }
}
