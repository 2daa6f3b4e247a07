// Fused SGD update (Caffe's SGDSolver: Normalize + Regularize + ComputeUpdateValue + Update)
// for one parameter blob, in place:
//   g = diff * scale                          (only when scale != 1: clipping / iter_size)
//   g = g + local_decay * (l1 ? sign(w) : w)  (only when local_decay != 0)
//   history = local_rate * g + momentum * history
//   diff = history;  data = data - history
// 1-D launch over count = the blob's size.
#include "common.cuh"

template <typename T>
__global__ void sgd_update(const int count, T* data, T* diff, T* history, const T local_rate, const T local_decay,
                           const T momentum, const T scale, const int l1) {
  CUDA_KERNEL_LOOP(i, count) {
    const T w = data[i];
    T g = diff[i];
    if (scale != T(1)) g = g * scale;
    if (local_decay != T(0)) {
      const T sign_w = T((T(0) < w) - (w < T(0)));
      g = g + local_decay * (l1 ? sign_w : w);
    }
    const T h = local_rate * g + momentum * history[i];
    history[i] = h;
    diff[i] = h;
    data[i] = w - h;
  }
}
