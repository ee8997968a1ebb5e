// CPU stand-ins for the CUDA built-ins, kernel launch and runtime calls that
// local_relation_kernels.cu and local_relation_harness.cu use, so that both
// compile with a host C++ compiler (-x c++ -DKERAS_RELNET_CUDA_EMULATION) and
// run here: the same kernel source, checked against the CPU reference on a
// machine without a GPU (`make cuda-emulation`).
//
// Each block runs its threads as fibers on one OS thread, switched at
// __syncthreads and at warp shuffles, which wait for every live thread of the
// block / lane of the warp. Blocks run one after another, in the grid's order
// or, after SetSchedule(seed), in a shuffled order with the fibers of each
// block visited last to first. It checks indexing,
// shared-memory layout, launch configuration limits, barriers and shuffle
// reductions; it says nothing about speed, and cannot show races that real
// hardware would expose between barriers. A shuffle after a lane of its warp
// has exited, or a barrier that some thread never reaches, stops the program
// with a message (both are undefined or a hang on a GPU). Comparing the
// results of two schedules shows a sum whose rounding depends on the order
// blocks and warps run (atomics), which a GPU does not fix either.
#ifndef KERAS_RELNET_HARNESS_CUDA_EMULATION_H_
#define KERAS_RELNET_HARNESS_CUDA_EMULATION_H_

#include <ucontext.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include <cuda_bf16.h>  // __half, __nv_bfloat16 and their conversions work on the host
#include <cuda_fp16.h>

// (The CUDA headers define these for host compilers as attributes; here
// they are plain host functions.)
#undef __global__
#undef __forceinline__
#define __global__
#define __forceinline__ inline

namespace keras_relnet {
namespace emulation {

constexpr int kWarpSize = 32;
constexpr size_t kMaxDynamicShared = 48 * 1024;  // without an opt-in attribute
constexpr unsigned kMaxThreadsPerBlock = 1024, kMaxGridY = 65535;

struct Fiber {
  ucontext_t context;
  std::vector<char> stack;
  enum State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kExited } state = kRunnable;
};

// The block being run, seen by its fibers.
struct Block {
  dim3 index, size;
  std::vector<Fiber> fibers;
  std::vector<float> shared;
  std::vector<float> exchange;  // [2 rounds, warps, 32 lanes] shuffle values
  std::vector<int> rounds;      // per thread: shuffles done, so the buffer parity
  ucontext_t scheduler;
  int current = 0;
};

inline Block*& CurrentBlock() {
  static Block* block = nullptr;
  return block;
}

[[noreturn]] inline void Fail(const char* message) {
  std::fprintf(stderr, "CUDA emulation: %s\n", message);
  std::exit(3);
}

inline void YieldTo(Fiber::State state) {
  Block& block = *CurrentBlock();
  block.fibers[block.current].state = state;
  swapcontext(&block.fibers[block.current].context, &block.scheduler);
}

// 0: blocks in the grid's order, fibers first to last; else the seed of a
// shuffled block order, with fibers visited last to first.
inline unsigned& ScheduleSeed() {
  static unsigned seed = 0;
  return seed;
}
inline void SetSchedule(unsigned seed) { ScheduleSeed() = seed; }

inline int& LastError() {
  static int error = 0;
  return error;
}

}  // namespace emulation
}  // namespace keras_relnet

// The built-in variables, per fiber (threadIdx) or per block.
struct EmulatedThreadIndex {
  operator dim3() const { return dim3(x, 0, 0); }
  unsigned x;
};
#define threadIdx (::keras_relnet::emulation::ThreadIndex())
#define blockIdx (::keras_relnet::emulation::CurrentBlock()->index)
#define blockDim (::keras_relnet::emulation::CurrentBlock()->size)

namespace keras_relnet {
namespace emulation {

inline EmulatedThreadIndex ThreadIndex() {
  return EmulatedThreadIndex{static_cast<unsigned>(CurrentBlock()->current)};
}

}  // namespace emulation
}  // namespace keras_relnet

inline void __syncthreads() {
  ::keras_relnet::emulation::YieldTo(::keras_relnet::emulation::Fiber::kAtBlockBarrier);
}

inline float __shfl_xor_sync(unsigned /*mask*/, float value, int lane_mask) {
  using namespace ::keras_relnet::emulation;
  Block& block = *CurrentBlock();
  const int thread = block.current, warp = thread / kWarpSize, lane = thread % kWarpSize;
  const int warps = (block.size.x + kWarpSize - 1) / kWarpSize;
  const int parity = block.rounds[thread]++ % 2;
  float* values = block.exchange.data() + (parity * warps + warp) * kWarpSize;
  values[lane] = value;
  YieldTo(Fiber::kAtWarpBarrier);
  const int partner = lane ^ lane_mask;
  if (warp * kWarpSize + partner >= static_cast<int>(block.size.x)) Fail("shuffle with a lane past blockDim");
  return values[partner];
}

template <typename T>
inline T __ldg(const T* address) {
  return *address;
}

inline float atomicAdd(float* address, float value) {  // fibers never interleave within it
  const float old = *address;
  *address = old + value;
  return old;
}

namespace keras_relnet {
namespace emulation {

// The dynamic shared memory of the running block (the kernels' DynamicShared()).
inline float* DynamicShared() { return CurrentBlock()->shared.data(); }

// Runs every fiber of the block until all have exited; releases a warp's
// lanes when all its live lanes wait at a shuffle, and the block when all
// live threads wait at __syncthreads.
inline void RunBlock(Block& block) {
  const int threads = static_cast<int>(block.size.x);
  const int warps = (threads + kWarpSize - 1) / kWarpSize;
  for (;;) {
    bool ran = false;
    for (int n = 0; n < threads; ++n) {
      const int t = ScheduleSeed() ? threads - 1 - n : n;
      if (block.fibers[t].state != Fiber::kRunnable) continue;
      block.current = t;
      swapcontext(&block.scheduler, &block.fibers[t].context);
      ran = true;
    }
    for (int warp = 0; warp < warps; ++warp) {
      int waiting = 0, exited = 0, lanes = 0;
      for (int t = warp * kWarpSize; t < std::min(threads, (warp + 1) * kWarpSize); ++t, ++lanes) {
        waiting += block.fibers[t].state == Fiber::kAtWarpBarrier;
        exited += block.fibers[t].state == Fiber::kExited;
      }
      if (waiting && exited) Fail("a warp shuffle after a lane of its warp exited");
      if (waiting == lanes) {
        for (int t = warp * kWarpSize; t < warp * kWarpSize + lanes; ++t)
          block.fibers[t].state = Fiber::kRunnable;
        ran = true;
      }
    }
    int at_barrier = 0, exited = 0;
    for (const Fiber& fiber : block.fibers) {
      at_barrier += fiber.state == Fiber::kAtBlockBarrier;
      exited += fiber.state == Fiber::kExited;
    }
    if (exited == threads) return;
    if (at_barrier && at_barrier + exited == threads) {
      for (Fiber& fiber : block.fibers)
        if (fiber.state == Fiber::kAtBlockBarrier) fiber.state = Fiber::kRunnable;
      ran = true;
    }
    if (!ran) Fail("deadlock: threads wait at a barrier or shuffle that others never reach");
  }
}

template <typename Body>
void FiberEntry(unsigned low, unsigned high) {
  const uintptr_t address = (static_cast<uintptr_t>(high) << 32) | low;
  (*reinterpret_cast<Body*>(address))();
  Block& block = *CurrentBlock();
  block.fibers[block.current].state = Fiber::kExited;
  swapcontext(&block.fibers[block.current].context, &block.scheduler);
}

// `Launcher(kernel, grid, block, shared)(arguments...)`: the stand-in for
// `kernel<<<grid, block, shared>>>(arguments...)`.
template <typename... Parameters>
struct Launcher {
  void (*kernel)(Parameters...);
  dim3 grid, block;
  size_t shared_bytes;

  template <typename... Arguments>
  void operator()(Arguments&&... arguments) const {
    if (block.x == 0 || block.x > kMaxThreadsPerBlock || grid.y > kMaxGridY ||
        shared_bytes > kMaxDynamicShared) {
      LastError() = 9;  // cudaErrorInvalidConfiguration
      return;
    }
    Block state;
    state.size = block;
    state.fibers.resize(block.x);
    state.rounds.assign(block.x, 0);
    state.exchange.assign(2 * ((block.x + kWarpSize - 1) / kWarpSize) * kWarpSize, 0.f);
    for (Fiber& fiber : state.fibers) fiber.stack.resize(64 * 1024);
    CurrentBlock() = &state;
    auto body = [&] { kernel(arguments...); };
    using Body = decltype(body);
    std::vector<std::pair<unsigned, unsigned>> order;
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) order.emplace_back(x, y);
    if (ScheduleSeed()) std::shuffle(order.begin(), order.end(), std::mt19937(ScheduleSeed()));
    for (const auto& [x, y] : order) {
      {
        state.index = dim3(x, y, 0);
        // Garbage, as on a GPU: a kernel that reads shared memory before writing it shows.
        state.shared.assign(shared_bytes / sizeof(float), std::nanf(""));
        std::fill(state.rounds.begin(), state.rounds.end(), 0);
        for (Fiber& fiber : state.fibers) {
          getcontext(&fiber.context);
          fiber.context.uc_stack.ss_sp = fiber.stack.data();
          fiber.context.uc_stack.ss_size = fiber.stack.size();
          fiber.context.uc_link = nullptr;
          const uintptr_t address = reinterpret_cast<uintptr_t>(&body);
          makecontext(&fiber.context, reinterpret_cast<void (*)()>(&FiberEntry<Body>), 2,
                      static_cast<unsigned>(address & 0xffffffffu),
                      static_cast<unsigned>(address >> 32));
          fiber.state = Fiber::kRunnable;
        }
        RunBlock(state);
      }
    }
    CurrentBlock() = nullptr;
  }
};

template <typename... Parameters>
Launcher<Parameters...> Launch(void (*kernel)(Parameters...), dim3 grid, dim3 block,
                               size_t shared_bytes) {
  return Launcher<Parameters...>{kernel, grid, block, shared_bytes};
}

}  // namespace emulation
}  // namespace keras_relnet

#define KERAS_RELNET_LAUNCH(grid, block, shared, stream, ...) \
  ::keras_relnet::emulation::Launch(&__VA_ARGS__, grid, block, shared)

// The runtime calls, on host memory.
inline cudaError_t cudaGetLastError() {
  const int error = ::keras_relnet::emulation::LastError();
  ::keras_relnet::emulation::LastError() = 0;
  return static_cast<cudaError_t>(error);
}
inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : "emulated CUDA error";
}
inline cudaError_t cudaMemsetAsync(void* address, int value, size_t bytes, cudaStream_t) {
  std::memset(address, value, bytes);
  return cudaSuccess;
}
template <typename T>
inline cudaError_t cudaMalloc(T** address, size_t bytes) {
  *address = static_cast<T*>(std::malloc(bytes));
  return *address ? cudaSuccess : cudaErrorMemoryAllocation;
}
inline cudaError_t cudaFree(void* address) {
  std::free(address);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* to, const void* from, size_t bytes, cudaMemcpyKind) {
  std::memcpy(to, from, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

#endif  // KERAS_RELNET_HARNESS_CUDA_EMULATION_H_
