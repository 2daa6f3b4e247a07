// Definitions shared by every kernel family.  The loader (memnet_engine/cuda/loader.py) pastes this
// file in place of `#include "common.cuh"`, so NVRTC needs no include path and CuPy's compile cache
// sees every change.
//
// Conventions of all kernels:
// - arrays are C-contiguous (NCHW for images), element type T is float or double;
// - sizes and indices are int: the launcher refuses arrays of 2^31 - 2^24 elements or more and caps
//   the grid at 65536 blocks, so `index + blockDim.x * gridDim.x` never overflows;
// - "1-D launch" means block BLOCK_THREADS, grid min(ceil(count / BLOCK_THREADS), 65536), with a
//   grid-stride loop over the count.

#define BLOCK_THREADS 256

// Grid-stride loop: thread `i` visits i, i + (all threads of the grid), ... below n.
#define CUDA_KERNEL_LOOP(i, n) \
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

// Sum of `value` over the threads of a block whose blockDim.x is a power of two <= BLOCK_THREADS.
// `shared` is a __shared__ array of BLOCK_THREADS elements; every thread gets the sum, and the
// array may be reused on return.  Call it from code that all threads of the block reach.
template <typename T>
__device__ T block_sum(T value, T* shared) {
  const int t = threadIdx.x;
  shared[t] = value;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) shared[t] += shared[t + half];
    __syncthreads();
  }
  const T total = shared[0];
  __syncthreads();
  return total;
}

// For the per-channel reductions of an array viewed as (outer, channels, inner): the positions
// j = o * inner + i (o < outer, i < inner) of one channel are cut into gridDim.x equal chunks;
// block blockIdx.x covers [begin, end) of them, and channel_element gives the element's index.
struct Chunk {
  int begin, end;
};

__device__ inline Chunk block_chunk(const int length) {
  const int per_chunk = (length + gridDim.x - 1) / gridDim.x;
  const int begin = blockIdx.x * per_chunk;
  return Chunk{begin, min(length, begin + per_chunk)};
}

__device__ inline int channel_element(const int j, const int c, const int channels, const int inner) {
  const int o = j / inner;
  return (o * channels + c) * inner + (j - o * inner);
}

// Single-launch reductions: a block that has written its partial results takes a ticket from
// `counter`; the block that takes the last of `blocks` tickets sees every block's partials (each
// block fences its writes before taking its ticket), goes on to add them up, and resets the counter
// for the next launch on the stream.  Deterministic: the last block adds the partials in a fixed
// order, whichever block arrives last; the partials are read through volatile pointers (not from a
// stale L1 line).  Call from code all threads of the block reach.
__device__ inline bool arrived_last(int* counter, const int blocks) {
  __shared__ int ticket;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    ticket = atomicAdd(counter, 1);
    if (ticket == blocks - 1) *counter = 0;
  }
  __syncthreads();
  return ticket == blocks - 1;
}

// This thread's share (strided by blockDim.x, in a fixed order) of the sum of row `row` of a
// (rows, cols) array of partial results that other blocks wrote (see arrived_last): volatile reads.
template <typename T>
__device__ T partial_row_sum(const volatile T* part, const int row, const int cols) {
  T sum = 0;
  for (int k = threadIdx.x; k < cols; k += blockDim.x) sum += part[row * cols + k];
  return sum;
}
