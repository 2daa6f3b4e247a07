// Fused SGD update of a net's flat learnable state (Caffe's SGDSolver: ClipGradients' scaling +
// Normalize + Regularize + ComputeUpdateValue + Update), in place, over the learned parameters
// [0, count) of the flat data / diff / history arrays.  Parameters are laid out in runs of equal
// multipliers: run r covers [run_end[r - 1], run_end[r]) (run_end[-1] = 0), with lr_mult[r] and
// decay_mult[r].  Per element, each operation rounded on its own (compiled with --fmad=false):
//   g = diff * clip_scale;  g = g * iter_scale
//   g = g + (weight_decay * decay_mult) * (l1 ? sign(w) : w)   (only when that decay != 0)
//   history = (rate * lr_mult) * g + momentum * history
//   diff = history;  data = data - history
// and *nonfinite = 1 when a new weight is not finite (every such thread writes the same value).
// 1-D launch over count.
#include "common.cuh"

template <typename T>
__global__ void sgd_update(const int count, T* data, T* diff, T* history, const int runs, const int* run_end,
                           const T* lr_mult, const T* decay_mult, const T rate, const T weight_decay,
                           const T momentum, const T clip_scale, const T iter_scale, const int l1, T* nonfinite) {
  CUDA_KERNEL_LOOP(i, count) {
    int lo = 0, hi = runs - 1;  // the run holding i: the first with run_end > i
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (run_end[mid] > i) hi = mid; else lo = mid + 1;
    }
    const T w = data[i];
    T g = diff[i] * clip_scale;
    g = g * iter_scale;
    const T local_decay = weight_decay * decay_mult[lo];
    if (local_decay != T(0)) {
      const T sign_w = T((T(0) < w) - (w < T(0)));
      g = g + local_decay * (l1 ? sign_w : w);
    }
    const T h = (rate * lr_mult[lo]) * g + momentum * history[i];
    history[i] = h;
    diff[i] = h;
    const T updated = w - h;
    data[i] = updated;
    if (!(updated - updated == T(0))) *nonfinite = T(1);  // inf - inf and NaN - NaN are NaN
  }
}
