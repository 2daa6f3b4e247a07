// im2col / col2im for 2-D convolution with stride, padding and dilation: Caffe's per-image algorithms
// on a batch of images at once, in the image-major column layout:
//   col has shape (num, channels * kernel_h * kernel_w, out_h * out_w);
//   col[n][(c * kernel_h + i) * kernel_w + j][oh * out_w + ow]
//     = x[n][c][oh * stride_h - pad_h + i * dilation_h][ow * stride_w - pad_w + j * dilation_w]
//   (0 where that falls in the padding).
// Each image's block is Caffe's column matrix, so a convolution is ONE strided-batched GEMM per group
// whose products read and write NCHW directly:
//   y[n] (out_channels, out_h * out_w) = W (out_channels, channels * kh * kw) @ col[n].
// Rows of one group (channels [g * C/G, (g + 1) * C/G)) are contiguous within each image's block.
#include "common.cuh"

// 1-D launch over count = num * channels * out_h * out_w: one thread per (n, c, output pixel), in
// that order, so a warp writes consecutive addresses; each thread writes the kernel_h * kernel_w
// values of its pixel, one per col row of its channel.
template <typename T>
__global__ void im2col(const int count, const T* x, const int height, const int width,
                       const int kernel_h, const int kernel_w, const int pad_h, const int pad_w,
                       const int stride_h, const int stride_w, const int dilation_h, const int dilation_w,
                       const int out_h, const int out_w, T* col) {
  const int spatial = out_h * out_w;
  CUDA_KERNEL_LOOP(index, count) {
    const int p = index % spatial;
    const int image_channel = index / spatial;  // n * channels + c
    const int oh = p / out_w;
    const int ow = p - oh * out_w;
    const int h0 = oh * stride_h - pad_h;
    const int w0 = ow * stride_w - pad_w;
    const T* image = x + image_channel * height * width;
    T* out = col + image_channel * kernel_h * kernel_w * spatial + p;
    for (int i = 0; i < kernel_h; ++i) {
      const int h = h0 + i * dilation_h;
      for (int j = 0; j < kernel_w; ++j) {
        const int w = w0 + j * dilation_w;
        *out = (h >= 0 && h < height && w >= 0 && w < width) ? image[h * width + w] : T(0);
        out += spatial;
      }
    }
  }
}

// Adjoint of im2col: x[n][c][h][w] = sum of the col entries that im2col read from it.
// Overwrites x (no accumulation), so it directly gives a bottom diff.
// 1-D launch over count = num * channels * height * width (one thread per image element, NCHW
// order); each thread gathers from the output pixels whose window covers it (no atomics).
template <typename T>
__global__ void col2im(const int count, const T* col, const int height, const int width,
                       const int kernel_h, const int kernel_w, const int pad_h, const int pad_w,
                       const int stride_h, const int stride_w, const int dilation_h, const int dilation_w,
                       const int out_h, const int out_w, T* x) {
  const int spatial = out_h * out_w;
  const int extent_h = (kernel_h - 1) * dilation_h + 1;
  const int extent_w = (kernel_w - 1) * dilation_w + 1;
  CUDA_KERNEL_LOOP(index, count) {
    const int w_pad = index % width + pad_w;  // position in the padded image
    const int h_pad = (index / width) % height + pad_h;
    const int image_channel = index / (width * height);  // n * channels + c
    // Output pixels oh with 0 <= h_pad - oh * stride_h <= extent_h - 1 (same for w).
    const int oh_begin = h_pad < extent_h ? 0 : (h_pad - extent_h) / stride_h + 1;
    const int oh_end = min(h_pad / stride_h + 1, out_h);
    const int ow_begin = w_pad < extent_w ? 0 : (w_pad - extent_w) / stride_w + 1;
    const int ow_end = min(w_pad / stride_w + 1, out_w);
    const T* block = col + image_channel * kernel_h * kernel_w * spatial;
    T sum = 0;
    for (int oh = oh_begin; oh < oh_end; ++oh) {
      const int dh = h_pad - oh * stride_h;
      if (dh % dilation_h != 0) continue;
      for (int ow = ow_begin; ow < ow_end; ++ow) {
        const int dw = w_pad - ow * stride_w;
        if (dw % dilation_w != 0) continue;
        const int col_row = (dh / dilation_h) * kernel_w + dw / dilation_w;
        sum += block[col_row * spatial + oh * out_w + ow];
      }
    }
    x[index] = sum;
  }
}
