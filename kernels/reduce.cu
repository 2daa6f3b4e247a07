// Per-channel reductions of an array viewed as (outer, channels, inner): BatchNorm statistics and
// gradients, Scale and bias parameter gradients, the Euclidean loss, the gradient norm.  One launch,
// no floating-point atomics, deterministic: each block sums a chunk of one channel into a partial,
// and the channel's last block to finish (arrived_last, common.cuh) adds the partials in order.
#include "common.cuh"

// For channel c = blockIdx.y and chunk k = blockIdx.x (of gridDim.x chunks), over the elements of
// channel c whose position j = o * inner + i (o < outer, i < inner) lies in chunk k:
//   u = a - shift[c]  (shift may be null: u = a),   w = b (may be null: w = u)
//   part_sum[c * chunks + k] = sum of u,   part_dot[c * chunks + k] = sum of u * w
// then, by the channel's last block, with S and D the sums of the channel's partials:
//   sum_out[c] = alpha * S + beta_sum * sum_out[c],   dot_out[c] = alpha * D + beta_dot * dot_out[c]
// (an output is not read when its beta is 0; a null output, and its partials, are skipped).  So:
// sums (a), dot products (a, b), centred sums of squares (a, shift).  arrivals[c] is 0 on entry
// and on return (ticket counters, one per channel).
// Launch: grid (chunks, channels) with channels <= 65535, block BLOCK_THREADS.
template <typename T>
__global__ void channel_sums(const T* a, const T* b, const T* shift, const int outer, const int channels,
                             const int inner, T* part_sum, T* part_dot, int* arrivals, const T alpha,
                             const T beta_sum, const T beta_dot, T* sum_out, T* dot_out) {
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
  if (sum_out) {
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) part_sum[slot] = sum;
  }
  if (dot_out) {
    dot = block_sum(dot, shared);
    if (threadIdx.x == 0) part_dot[slot] = dot;
  }
  if (!arrived_last(arrivals + c, chunks)) return;
  if (sum_out) {
    sum = block_sum(partial_row_sum(part_sum, c, chunks), shared);
    if (threadIdx.x == 0) sum_out[c] = beta_sum == T(0) ? alpha * sum : alpha * sum + beta_sum * sum_out[c];
  }
  if (dot_out) {
    dot = block_sum(partial_row_sum(part_dot, c, chunks), shared);
    if (threadIdx.x == 0) dot_out[c] = beta_dot == T(0) ? alpha * dot : alpha * dot + beta_dot * dot_out[c];
  }
}
