// Host C++ stand-ins for the CUDA built-ins that kernels/*.cu use, so the kernels compile with g++
// and run on the CPU (tests only).  The blocks of a grid run one after another; the threads of a
// block run one after another as plain calls, or -- for kernels that reach __syncthreads -- as
// fibers (own stacks; a register switch on x86-64, ucontext elsewhere) that all switch out at each
// barrier before any goes on, which is the ordering CUDA guarantees.  __shared__ variables become
// function statics: one copy, seen by every thread.
#pragma once
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
};

namespace emu {
inline dim3 grid_dim, block_dim;
inline uint3 block_idx;
inline unsigned thread_linear = 0;
inline bool fiber_mode = false;
inline std::string error;

// ---- fibers: a stack per thread of the block and a way to switch between stacks.
constexpr std::size_t kStackBytes = 64 * 1024;

#if defined(__x86_64__)
// Saves the callee-saved registers on the current stack, stores the stack pointer in *save and
// resumes the stack `load` (a switch without the signal-mask system call of swapcontext).
extern "C" void emu_switch(void** save, void* load);
asm(".text\n.hidden emu_switch\n.globl emu_switch\n.type emu_switch,@function\nemu_switch:\n"
    " pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
    " movq %rsp, (%rdi)\n movq %rsi, %rsp\n"
    " popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n ret\n");
struct Context {
  void* sp = nullptr;
};
inline void switch_to(Context& save, Context& load) { emu_switch(&save.sp, load.sp); }
#else
struct Context {
  ucontext_t uc;
};
inline void switch_to(Context& save, Context& load) { swapcontext(&save.uc, &load.uc); }
#endif

struct Fiber {
  Context context;
  std::unique_ptr<char[]> stack;
  bool done = false;
};
inline Context scheduler;
inline std::vector<Fiber> fibers;
inline std::function<void()>* body = nullptr;

inline void fiber_main() {
  const unsigned t = thread_linear;
  (*body)();
  fibers[t].done = true;
  switch_to(fibers[t].context, scheduler);  // never resumed
}

inline void start_fiber(Fiber& f) {
  if (!f.stack) f.stack.reset(new char[kStackBytes]);
  f.done = false;
#if defined(__x86_64__)
  // A frame emu_switch can "return" into: six zero registers, then fiber_main as return address,
  // placed so that fiber_main starts with the stack alignment of a normal call.
  auto top = reinterpret_cast<std::uintptr_t>(f.stack.get() + kStackBytes) & ~std::uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;
  *--sp = reinterpret_cast<void*>(&fiber_main);
  for (int r = 0; r < 6; ++r) *--sp = nullptr;
  f.context.sp = sp;
#else
  getcontext(&f.context.uc);
  f.context.uc.uc_stack.ss_sp = f.stack.get();
  f.context.uc.uc_stack.ss_size = kStackBytes;
  f.context.uc.uc_link = nullptr;
  makecontext(&f.context.uc, fiber_main, 0);
#endif
}

// Runs `run` once per thread of the current block.
inline void run_block(std::function<void()>& run, unsigned threads, bool with_fibers) {
  if (!with_fibers) {
    for (unsigned t = 0; t < threads; ++t) {
      thread_linear = t;
      run();
    }
    return;
  }
  body = &run;
  fiber_mode = true;
  fibers.resize(threads);
  for (unsigned t = 0; t < threads; ++t) start_fiber(fibers[t]);
  for (;;) {
    for (unsigned t = 0; t < threads; ++t) {
      if (fibers[t].done) continue;
      thread_linear = t;
      switch_to(scheduler, fibers[t].context);
    }
    unsigned done = 0;
    for (unsigned t = 0; t < threads; ++t) done += fibers[t].done;
    if (done == threads) break;
    if (done != 0) {  // the others wait at a barrier the finished ones never reached
      error = "__syncthreads reached by only part of a block (divergent barrier)";
      break;
    }
  }
  fiber_mode = false;
}
}  // namespace emu

inline uint3 emu_thread_idx() {
  const unsigned t = emu::thread_linear;
  return {t % emu::block_dim.x, (t / emu::block_dim.x) % emu::block_dim.y, t / (emu::block_dim.x * emu::block_dim.y)};
}
#define threadIdx (emu_thread_idx())
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() {
  if (!emu::fiber_mode) {
    std::fprintf(stderr, "emulator: __syncthreads in a kernel launched without fibers\n");
    std::abort();
  }
  const unsigned t = emu::thread_linear;
  emu::switch_to(emu::fibers[t].context, emu::scheduler);
  emu::thread_linear = t;
}

using std::max;
using std::min;
using std::sqrt;

// Blocks run one after another: an atomic is a plain read-modify-write, a fence has nothing to order.
inline int atomicAdd(int* address, const int value) {
  const int old = *address;
  *address = old + value;
  return old;
}
inline void __threadfence() {}

// ---- launching from Python (ctypes): arguments arrive as an array of pointers to values, as in
// cuLaunchKernel; the signature string lets the caller check each argument's C type.
template <typename T>
std::string emu_type_code() {
  if constexpr (std::is_pointer_v<T>) {
    return "P" + emu_type_code<std::remove_cv_t<std::remove_pointer_t<T>>>();
  } else if constexpr (std::is_same_v<T, float>) {
    return "f";
  } else if constexpr (std::is_same_v<T, double>) {
    return "d";
  } else if constexpr (std::is_same_v<T, int>) {
    return "i";
  } else {
    static_assert(sizeof(T) == 0, "kernel parameter type not known to the emulator");
  }
}

template <typename... A>
std::string emu_signature(void (*)(A...)) {
  std::string s;
  ((s += emu_type_code<A>() + " "), ...);
  return s;
}

template <typename... A, std::size_t... I>
void emu_invoke(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
  kernel(*static_cast<A*>(args[I])...);
}

template <typename... A>
const char* emu_launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, void** args,
                       int with_fibers) {
  emu::error.clear();
  emu::grid_dim = {grid[0], grid[1], grid[2]};
  emu::block_dim = {block[0], block[1], block[2]};
  std::function<void()> run = [&] { emu_invoke(kernel, args, std::index_sequence_for<A...>{}); };
  const unsigned threads = block[0] * block[1] * block[2];
  for (unsigned z = 0; z < grid[2] && emu::error.empty(); ++z)
    for (unsigned y = 0; y < grid[1] && emu::error.empty(); ++y)
      for (unsigned x = 0; x < grid[0] && emu::error.empty(); ++x) {
        emu::block_idx = {x, y, z};
        emu::run_block(run, threads, with_fibers != 0);
      }
  return emu::error.c_str();
}
