// EuclideanLoss gradient; the loss value itself is a reduction (reduce.cu).
#include "common.cuh"

// dx[i] = alpha * difference[i] with alpha = sign * loss_diff[0] / num, computed on the device
// (loss_diff is the loss top's diff, so no host round trip).
// 1-D launch over count = difference's size.
template <typename T>
__global__ void euclidean_backward(const int count, const T* difference, const T* loss_diff, const T sign,
                                   const T num, T* dx) {
  const T alpha = sign * loss_diff[0] / num;
  CUDA_KERNEL_LOOP(i, count) {
    dx[i] = alpha * difference[i];
  }
}
