// MemNet's unit, BatchNorm -> Scale -> ReLU, as one operation (core/layers/bn_scale_relu.py) on an
// array viewed as (outer, channels, inner) (NCHW: outer = N, inner = H * W).  Per channel c:
//   z = (x - mean[c]) / std[c],   u = z * gamma[c] + beta[c],   h = u > 0 ? u : u * slope
// with the roundings of the three separate kernels (bn_normalize, scale_bias, relu_forward).
// Forward: bsr_stats (batch statistics, one launch; stored ones come from batchnorm.cu's
// bn_global_stats), then bsr_forward.  Backward: bsr_grad_sums (one reduction, one launch), then
// bsr_backward (one apply pass).  No floating-point atomics: deterministic.
#include "common.cuh"

// Chan et al.'s merge of two (count, mean, M2) summaries, M2 = sum of squared deviations.
template <typename T>
__device__ void merge_moments(T& n, T& mean, T& m2, const T n_b, const T mean_b, const T m2_b) {
  const T total = n + n_b;
  if (total == T(0)) return;
  const T delta = mean_b - mean;
  const T weight_b = n_b / total;
  mean = mean + delta * weight_b;
  m2 = m2 + m2_b + delta * delta * (n * weight_b);
  n = total;
}

// Merges every thread's summary into thread 0's (a tree in a fixed order).  `shared` holds
// 3 * BLOCK_THREADS elements; blockDim.x is BLOCK_THREADS.  Call from code all threads reach.
template <typename T>
__device__ void block_merge_moments(T& n, T& mean, T& m2, T* shared) {
  const int t = threadIdx.x;
  T* sn = shared;
  T* smean = shared + BLOCK_THREADS;
  T* sm2 = shared + 2 * BLOCK_THREADS;
  sn[t] = n;
  smean[t] = mean;
  sm2[t] = m2;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) {
      T a = sn[t], b = smean[t], c = sm2[t];
      merge_moments(a, b, c, sn[t + half], smean[t + half], sm2[t + half]);
      sn[t] = a;
      smean[t] = b;
      sm2[t] = c;
    }
    __syncthreads();
  }
  n = sn[0];
  mean = smean[0];
  m2 = sm2[0];
  __syncthreads();
}

// block_sum (common.cuh) of two values at once: one barrier tree.  `shared` holds 2 * BLOCK_THREADS.
template <typename T>
__device__ void block_sum_pair(T& a, T& b, T* shared) {
  const int t = threadIdx.x;
  shared[t] = a;
  shared[BLOCK_THREADS + t] = b;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) {
      shared[t] += shared[t + half];
      shared[BLOCK_THREADS + t] += shared[BLOCK_THREADS + t + half];
    }
    __syncthreads();
  }
  a = shared[0];
  b = shared[BLOCK_THREADS];
  __syncthreads();
}

// Batch statistics in one launch.  Block (chunk k = blockIdx.x of gridDim.x, channel c = blockIdx.y):
// the count, mean and M2 of the elements of channel c whose position j = o * inner + i (o < outer,
// i < inner) lies in chunk k, written at part_*[c * chunks + k] (Welford per thread, then a merge
// across the block).  The channel's last block (arrived_last, common.cuh; arrivals[c] is 0 on entry
// and on return) merges the partials in chunk order into the batch mean and variance (M2 / m),
// std[c] = sqrt(var + eps), and updates Caffe's running sums (as bn_batch_stats):
//   running_mean = mean + fraction * running_mean
//   running_var  = correction * var + fraction * running_var   (correction = m / (m - 1))
//   running_scale[0] = running_scale[0] * fraction + 1         (by channel 0)
// Launch: grid (chunks, channels) with channels <= 65535, block BLOCK_THREADS.
template <typename T>
__global__ void bsr_stats(const T* x, const int outer, const int channels, const int inner, T* part_count,
                          T* part_mean, T* part_m2, int* arrivals, const T eps, const T fraction, const T correction,
                          T* running_mean, T* running_var, T* running_scale, T* mean_out, T* std_out) {
  __shared__ T shared[3 * BLOCK_THREADS];
  const int c = blockIdx.y;
  const int chunks = gridDim.x;
  const Chunk chunk = block_chunk(outer * inner);
  T n = 0, mean = 0, m2 = 0;
  for (int j = chunk.begin + threadIdx.x; j < chunk.end; j += blockDim.x) {
    const T v = x[channel_element(j, c, channels, inner)];
    n = n + T(1);
    const T delta = v - mean;
    mean = mean + delta / n;
    m2 = m2 + delta * (v - mean);
  }
  block_merge_moments(n, mean, m2, shared);
  if (threadIdx.x == 0) {
    const int slot = c * chunks + blockIdx.x;
    part_count[slot] = n;
    part_mean[slot] = mean;
    part_m2[slot] = m2;
  }
  if (!arrived_last(arrivals + c, chunks)) return;
  const volatile T* counts = part_count;
  const volatile T* means = part_mean;
  const volatile T* m2s = part_m2;
  n = 0;
  mean = 0;
  m2 = 0;
  for (int k = threadIdx.x; k < chunks; k += blockDim.x) {
    const int slot = c * chunks + k;
    merge_moments(n, mean, m2, counts[slot], means[slot], m2s[slot]);
  }
  block_merge_moments(n, mean, m2, shared);
  if (threadIdx.x == 0) {
    const T var = n > T(0) ? m2 / n : T(0);
    mean_out[c] = mean;
    std_out[c] = sqrt(var + eps);
    running_mean[c] = mean + fraction * running_mean[c];
    running_var[c] = correction * var + fraction * running_var[c];
    if (c == 0) running_scale[0] = running_scale[0] * fraction + T(1);
  }
}

// h[i] = relu(((x[i] - mean[c]) / std[c]) * gamma[c] + beta[c]), c = (i / inner) % channels; beta may
// be null.  1-D launch over count = x's size; h may alias x.
template <typename T>
__global__ void bsr_forward(const int count, const T* x, const T* mean, const T* std, const T* gamma, const T* beta,
                            const T slope, const int channels, const int inner, T* h) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / inner) % channels;
    T u = (x[i] - mean[c]) / std[c];
    u = u * gamma[c];
    if (beta) u = u + beta[c];
    h[i] = u > T(0) ? u : u * slope;
  }
}

// The backward reduction in one launch.  Block (chunk k = blockIdx.x, channel c = blockIdx.y), over
// the elements of the chunk (as in bsr_stats), with du = h > 0 ? dh : dh * slope (ReLU's gradient;
// h is the unit's output) and z = (x - mean[c]) / std[c]: part_du = sum of du, part_du_z = sum of
// du * z.  The channel's last block adds its partials in chunk order, S of du and D of du * z:
//   beta_diff[c] += S,  gamma_diff[c] += D   (Scale's parameter gradients; either may be null),
//   sum_dz[c] = S * gamma[c],  sum_dz_z[c] = D * gamma[c]   (BatchNorm's sums of its top diff dz = du * gamma).
// Launch: grid (chunks, channels) with channels <= 65535, block BLOCK_THREADS.
template <typename T>
__global__ void bsr_grad_sums(const T* x, const T* h, const T* dh, const T* mean, const T* std, const T slope,
                              const int outer, const int channels, const int inner, T* part_du, T* part_du_z,
                              int* arrivals, const T* gamma, T* gamma_diff, T* beta_diff, T* sum_dz, T* sum_dz_z) {
  __shared__ T shared[2 * BLOCK_THREADS];
  const int c = blockIdx.y;
  const int chunks = gridDim.x;
  const Chunk chunk = block_chunk(outer * inner);
  T sum = 0, dot = 0;
  for (int j = chunk.begin + threadIdx.x; j < chunk.end; j += blockDim.x) {
    const int index = channel_element(j, c, channels, inner);
    const T g = dh[index];
    const T du = h[index] > T(0) ? g : g * slope;
    const T z = (x[index] - mean[c]) / std[c];
    sum += du;
    dot += du * z;
  }
  block_sum_pair(sum, dot, shared);
  if (threadIdx.x == 0) {
    part_du[c * chunks + blockIdx.x] = sum;
    part_du_z[c * chunks + blockIdx.x] = dot;
  }
  if (!arrived_last(arrivals + c, chunks)) return;
  sum = partial_row_sum(part_du, c, chunks);
  dot = partial_row_sum(part_du_z, c, chunks);
  block_sum_pair(sum, dot, shared);
  if (threadIdx.x == 0) {
    if (beta_diff) beta_diff[c] = beta_diff[c] + sum;
    if (gamma_diff) gamma_diff[c] = gamma_diff[c] + dot;
    sum_dz[c] = sum * gamma[c];
    sum_dz_z[c] = dot * gamma[c];
  }
}

// With du = h > 0 ? dh : dh * slope and dz = du * gamma[c]:
//   dx = ((z * sum_dz_z[c] + sum_dz[c]) * neg_inv_m + dz) / std[c],  z = (x - mean[c]) / std[c]
//   (batch statistics; with stored ones, sum_dz null: dx = dz / std[c]); dx may be null;
//   dh is overwritten with what Caffe's in-place blob holds after the three backwards: dz, or du
//   when BatchNorm runs no backward (top_gets_dz = 0).
// 1-D launch over count = x's size.
template <typename T>
__global__ void bsr_backward(const int count, const T* x, const T* h, T* dh, const T* mean, const T* std,
                             const T* gamma, const T* sum_dz, const T* sum_dz_z, const T neg_inv_m, const T slope,
                             const int top_gets_dz, const int channels, const int inner, T* dx) {
  CUDA_KERNEL_LOOP(i, count) {
    const int c = (i / inner) % channels;
    const T g = dh[i];
    const T du = h[i] > T(0) ? g : g * slope;
    const T dz = du * gamma[c];
    if (dx) {
      T d = dz;
      if (sum_dz) {
        const T z = (x[i] - mean[c]) / std[c];
        d = (z * sum_dz_z[c] + sum_dz[c]) * neg_inv_m + dz;
      }
      dx[i] = d / std[c];
    }
    dh[i] = top_gets_dz ? dz : du;
  }
}
