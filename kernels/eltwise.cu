// Element-wise combinations of same-shape arrays (Eltwise SUM / PROD / MAX, Split's gradient sum).
// Every kernel is a 1-D launch over `count` elements of contiguous arrays.
#include "common.cuh"

// out[i] = alpha * x[i] + beta * y[i]; with y null, out[i] = alpha * x[i].
// out may alias x or y (running sums: out = 1 * out + c * next).
template <typename T>
__global__ void weighted_sum(const int count, const T alpha, const T* x, const T beta, const T* y, T* out) {
  CUDA_KERNEL_LOOP(i, count) {
    out[i] = y ? alpha * x[i] + beta * y[i] : alpha * x[i];
  }
}

// out[i] = a[i] * b[i]; out may alias a.
template <typename T>
__global__ void eltwise_prod(const int count, const T* a, const T* b, T* out) {
  CUDA_KERNEL_LOOP(i, count) {
    out[i] = a[i] * b[i];
  }
}

// Gradient of a product through the quotient (stable_prod_grad: false): dx = (top / x) * dy.
template <typename T>
__global__ void eltwise_prod_grad(const int count, const T* top, const T* x, const T* dy, T* dx) {
  CUDA_KERNEL_LOOP(i, count) {
    dx[i] = (top[i] / x[i]) * dy[i];
  }
}

// One step of Eltwise MAX with Caffe's CPU tie rule, recording the winning bottom in `mask`.
// b_index == 1 (first pair): out = a > b ? a : b, mask = a > b ? 0 : 1 (ties go to bottom 1).
// b_index >= 2: `a` is the running maximum (normally aliasing out); where b > a strictly,
// out = b and mask = b_index (ties keep the earlier winner).
template <typename T>
__global__ void eltwise_max(const int count, const T* a, const T* b, const int b_index, T* out, int* mask) {
  CUDA_KERNEL_LOOP(i, count) {
    const T va = a[i], vb = b[i];
    if (b_index == 1) {
      const bool first = va > vb;
      out[i] = first ? va : vb;
      mask[i] = first ? 0 : 1;
    } else if (vb > va) {
      out[i] = vb;
      mask[i] = b_index;
    } else {
      out[i] = va;
    }
  }
}

// dx[i] = mask[i] == index ? dy[i] : 0  (gradient of Eltwise MAX for bottom `index`).
template <typename T>
__global__ void eltwise_max_backward(const int count, const T* dy, const int* mask, const int index, T* dx) {
  CUDA_KERNEL_LOOP(i, count) {
    dx[i] = mask[i] == index ? dy[i] : T(0);
  }
}
