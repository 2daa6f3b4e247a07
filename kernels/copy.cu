// Copies between layouts: Concat's slab copy.
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
