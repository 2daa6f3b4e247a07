// Element-wise combinations of same-shape arrays (Eltwise SUM / PROD / MAX, Split's gradient sum).
// Every kernel is a 1-D launch over `count` elements of contiguous arrays.
#include "common.cuh"

// out[i] = ((c0 * x0[i] + c1 * x1[i]) + c2 * x2[i]) + c3 * x3[i]: added left to right, each product
// rounded (as separate launches of a pairwise sum would); x1..x3 may be null (their terms left out).
// out may alias x0 (a running sum carried on: c0 = 1).
template <typename T>
__global__ void weighted_sum(const int count, const T c0, const T* x0, const T c1, const T* x1, const T c2,
                             const T* x2, const T c3, const T* x3, T* out) {
  CUDA_KERNEL_LOOP(i, count) {
    T sum = c0 * x0[i];
    if (x1) sum = sum + c1 * x1[i];
    if (x2) sum = sum + c2 * x2[i];
    if (x3) sum = sum + c3 * x3[i];
    out[i] = sum;
  }
}

// out_k[i] = c_k * x[i] for k = 0..3 (null outputs skipped): Eltwise SUM's bottom gradients in one pass.
template <typename T>
__global__ void scaled_copies(const int count, const T* x, const T c0, T* out0, const T c1, T* out1, const T c2,
                              T* out2, const T c3, T* out3) {
  CUDA_KERNEL_LOOP(i, count) {
    const T v = x[i];
    if (out0) out0[i] = c0 * v;
    if (out1) out1[i] = c1 * v;
    if (out2) out2[i] = c2 * v;
    if (out3) out3[i] = c3 * v;
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
