// Per-channel reductions of an array viewed as (outer, channels, inner): BatchNorm statistics and
// gradients, Scale and bias parameter gradients, the Euclidean loss.  Deterministic two-pass
// scheme (no atomics): channel_partial_sums leaves one partial sum per (channel, chunk), then
// sum_rows adds each channel's partials.
#include "common.cuh"

// For channel c = blockIdx.y and chunk k = blockIdx.x (of gridDim.x chunks), over the elements of
// channel c whose position j = o * inner + i (o < outer, i < inner) lies in chunk k:
//   u = a - shift[c]  (shift may be null: u = a),   w = b (may be null: w = u)
//   part_sum[c * chunks + k] = sum of u,   part_dot[c * chunks + k] = sum of u * w
// (either output may be null to skip it).  So: sums (a), dot products (a, b), centred sums of
// squares (a, shift).
// Launch: grid (chunks, channels) with channels <= 65535, block BLOCK_THREADS; the threads of a
// block stride through their chunk of one channel.
template <typename T>
__global__ void channel_partial_sums(const T* a, const T* b, const T* shift, const int outer, const int channels,
                                     const int inner, T* part_sum, T* part_dot) {
  __shared__ T shared[BLOCK_THREADS];
  const int c = blockIdx.y;
  const int chunks = gridDim.x;
  const Chunk chunk = block_chunk(outer * inner);
  const T offset = shift ? shift[c] : T(0);
  T sum = 0, dot = 0;
  for (int j = chunk.begin + threadIdx.x; j < chunk.end; j += blockDim.x) {
    const int index = channel_element(j, c, channels, inner);
    const T u = a[index] - offset;
    sum += u;
    dot += u * (b ? b[index] : u);
  }
  const int slot = c * chunks + blockIdx.x;
  if (part_sum) {
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) part_sum[slot] = sum;
  }
  if (part_dot) {
    dot = block_sum(dot, shared);
    if (threadIdx.x == 0) part_dot[slot] = dot;
  }
}

// out[r] = alpha * (sum of part[r][0..cols)) + beta * out[r]; out is not read when beta == 0
// (so it may hold garbage).  With beta = 1 it accumulates, as parameter gradients do.
// Launch: grid (rows), block BLOCK_THREADS.
template <typename T>
__global__ void sum_rows(const T* part, const int cols, const T alpha, const T beta, T* out) {
  __shared__ T shared[BLOCK_THREADS];
  const int r = blockIdx.x;
  T sum = 0;
  for (int j = threadIdx.x; j < cols; j += blockDim.x) sum += part[r * cols + j];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) out[r] = beta == T(0) ? alpha * sum : alpha * sum + beta * out[r];
}
