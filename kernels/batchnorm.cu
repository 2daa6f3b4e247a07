// BatchNorm (Caffe's: normalisation only) on an array viewed as (outer, channels, inner).
// The per-channel sums come from reduce.cu; these kernels turn them into statistics and apply them.
#include "common.cuh"

// Batch statistics: std[c] = sqrt(var[c] + eps), and Caffe's running sums
//   running_mean = mean + fraction * running_mean
//   running_var  = correction * var + fraction * running_var   (correction = m / (m - 1))
//   running_scale[0] = running_scale[0] * fraction + 1
// 1-D launch over count = channels.
template <typename T>
__global__ void bn_batch_stats(const int count, const T* mean, const T* var, const T eps, const T fraction,
                               const T correction, T* running_mean, T* running_var, T* running_scale, T* std) {
  CUDA_KERNEL_LOOP(c, count) {
    std[c] = sqrt(var[c] + eps);
    running_mean[c] = mean[c] + fraction * running_mean[c];
    running_var[c] = correction * var[c] + fraction * running_var[c];
    if (c == 0) running_scale[0] = running_scale[0] * fraction + T(1);
  }
}

// Stored statistics: with s = running_scale[0] and factor = s == 0 ? 0 : 1 / s,
//   mean[c] = running_mean[c] * factor,  std[c] = sqrt(running_var[c] * factor + eps).
// 1-D launch over count = channels.
template <typename T>
__global__ void bn_global_stats(const int count, const T* running_mean, const T* running_var,
                                const T* running_scale, const T eps, T* mean, T* std) {
  CUDA_KERNEL_LOOP(c, count) {
    const T s = running_scale[0];
    const T factor = s == T(0) ? T(0) : T(1) / s;
    mean[c] = running_mean[c] * factor;
    std[c] = sqrt(running_var[c] * factor + eps);
  }
}

// y = (x - mean[c]) / std[c], c = (i / inner) % channels.  1-D launch over count = x's size.
template <typename T>
__global__ void bn_normalize(const int count, const T* x, const T* mean, const T* std, const int channels,
                             const int inner, T* y) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / inner) % channels;
    y[i] = (x[i] - mean[c]) / std[c];
  }
}

// Batch statistics (y not null, y = normalised output):
//   dx = ((y * sum_dy_y[c] + sum_dy[c]) * neg_inv_m + dy) / std[c],  neg_inv_m = -1 / m
// Stored statistics (y null): dx = dy / std[c].
// 1-D launch over count = dy's size; dx may alias dy.
template <typename T>
__global__ void bn_backward(const int count, const T* dy, const T* y, const T* sum_dy, const T* sum_dy_y,
                            const T* std, const T neg_inv_m, const int channels, const int inner, T* dx) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / inner) % channels;
    const T g = y ? (y[i] * sum_dy_y[c] + sum_dy[c]) * neg_inv_m + dy[i] : dy[i];
    dx[i] = g / std[c];
  }
}
