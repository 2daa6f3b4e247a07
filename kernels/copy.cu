// Copies between layouts: Concat's slab copy, and the transposes between NCHW images and the
// channel-major matrices that convolution GEMMs use.
//
// Channel-major layout of a (num, channels, spatial) array: a (channels, num * spatial) matrix,
// cm[c][n * spatial + p] = x[n][c][p].  The spatial index is innermost in both layouts, so the
// copies below read and write consecutive addresses across a warp without a shared-memory tile.
#include "common.cuh"

// Concat: a bottom of shape (outer, bottom_rows, inner) is the slab of rows
// [offset_rows, offset_rows + bottom_rows) of the top (outer, top_rows, inner).
// Arguments are in elements: bottom_block = bottom_rows * inner, top_block = top_rows * inner,
// offset = offset_rows * inner.  to_top != 0 copies bottom -> top (forward), else top -> bottom
// (backward: `from` is the top diff, `to` the bottom diff).
// 1-D launch over count = outer * bottom_block (one thread per bottom element).
template <typename T>
__global__ void concat_copy(const int count, const T* from, const int bottom_block, const int top_block,
                            const int offset, const int to_top, T* to) {
  CUDA_KERNEL_LOOP(i, count) {
    const int slab = i / bottom_block;
    const int top_index = slab * top_block + offset + (i - slab * bottom_block);
    if (to_top) {
      to[top_index] = from[i];
    } else {
      to[i] = from[top_index];
    }
  }
}

// cm = channel-major copy of x (num, channels, spatial).
// 1-D launch over count = num * channels * spatial, indexed in cm order (c, n, p).
template <typename T>
__global__ void nchw_to_cm(const int count, const T* x, const int num, const int channels, const int spatial,
                           T* cm) {
  CUDA_KERNEL_LOOP(i, count) {
    const int p = i % spatial;
    const int n = (i / spatial) % num;
    const int c = i / (spatial * num);
    cm[i] = x[(n * channels + c) * spatial + p];
  }
}

// x (num, channels, spatial) = NCHW copy of the channel-major cm, plus bias[c] when bias is
// not null (a convolution's bias add, fused into the copy).
// 1-D launch over count = num * channels * spatial, indexed in x order (n, c, p).
template <typename T>
__global__ void cm_to_nchw(const int count, const T* cm, const T* bias, const int num, const int channels,
                           const int spatial, T* x) {
  CUDA_KERNEL_LOOP(i, count) {
    const int p = i % spatial;
    const int c = (i / spatial) % channels;
    const int n = i / (spatial * channels);
    const T v = cm[(c * num + n) * spatial + p];
    x[i] = bias ? v + bias[c] : v;
  }
}
