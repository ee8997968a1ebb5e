// Standalone check of the CUDA local relation kernels, without TensorFlow.
//
// Runs the CUDA forward and backward kernels on random shapes (strides 1/2,
// k in {1,3,5,7,9}, m in {1,2,4,8,16,32}, dilation 1/2, every composability,
// odd sizes, B = 1..4) and compares them with the CPU kernels of
// local_relation_cpu.h (themselves tested against the Python reference), then
// times the kernels at the LR-Net-50 stage shapes (batch 8 and 32, k = 7,
// m = 8). harness/gpu_check.sh runs it on a GPU machine with
// compute-sanitizer and PyTorch's depthwise convolution beside it.
//
//   make cuda-harness      (at the repository root: build/cuda_harness)
//   build/cuda_harness [--cases N] [--seed S] [--no-benchmark]
//   build/cuda_harness --support < calls   (lines "k m dtype strides": what the
//                                           launchers accept, see SupportLine)
//   build/cuda_harness --determinism [--cases N]   (the fixed-order backward
//       bit-identical over repeated runs, and over shuffled block orders
//       under the emulation; see CheckDeterminism)
//
// Compiled by g++ with -DKERAS_RELNET_CUDA_EMULATION (`make cuda-emulation`),
// the same harness and kernels run on the CPU under cuda_emulation.h: the
// comparison only, no timing.
//
// Exit status 0 when every case agrees: for each result, the largest
// difference over max(1, its largest magnitude) is at most 1e-4 (float32),
// 1e-2 (float16) or 5e-2 (bfloat16), against the CPU kernels run on the same
// inputs rounded to that type.
#if defined(KERAS_RELNET_CUDA_EMULATION)
#include "cuda_emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu_reference.h"
#include "local_relation_kernels.h"

using namespace keras_relnet;

namespace {

#define CHECK_CUDA(call)                                                              \
  do {                                                                                \
    cudaError_t error = (call);                                                       \
    if (error != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(error)); \
      std::exit(2);                                                                   \
    }                                                                                 \
  } while (0)

struct Case {
  int batch, height, width, channels, group_size, kernel_size, strides, dilation, composability;
};

Geometry GeometryOf(const Case& c) {
  return MakeGeometry(c.batch, c.height, c.width, c.channels, c.channels / c.group_size,
                      c.kernel_size, c.strides, c.dilation, c.composability, 0.7f);
}

Tensors RandomInputs(const Geometry& g, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  auto fill = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
  };
  Tensors t;
  const size_t out_pixels = g.batch * g.out_height * g.out_width;
  const size_t in_pixels = g.batch * g.height * g.width;
  t.query = fill(out_pixels * g.groups);
  t.key = fill(in_pixels * g.groups);
  t.value = fill(in_pixels * g.channels);
  t.prior = fill(static_cast<size_t>(g.groups) * g.num_cells());
  t.d_output = fill(out_pixels * g.channels);
  return t;
}

template <typename T>
T FromFloat(float x);
template <>
float FromFloat<float>(float x) { return x; }
template <>
__half FromFloat<__half>(float x) { return __float2half(x); }
template <>
__nv_bfloat16 FromFloat<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
float ToHostFloat(float x) { return x; }
float ToHostFloat(__half x) { return __half2float(x); }
float ToHostFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

// Device buffer of n values of T, from and to host float32.
template <typename T>
struct Buffer {
  T* data = nullptr;
  size_t size = 0;
  explicit Buffer(size_t n) : size(n) { CHECK_CUDA(cudaMalloc(&data, std::max<size_t>(n, 1) * sizeof(T))); }
  Buffer(const std::vector<float>& host) : Buffer(host.size()) {
    std::vector<T> converted(host.size());
    for (size_t i = 0; i < host.size(); ++i) converted[i] = FromFloat<T>(host[i]);
    CHECK_CUDA(cudaMemcpy(data, converted.data(), size * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Buffer() { cudaFree(data); }
  std::vector<float> Host() const {
    std::vector<T> raw(size);
    CHECK_CUDA(cudaMemcpy(raw.data(), data, size * sizeof(T), cudaMemcpyDeviceToHost));
    std::vector<float> out(size);
    for (size_t i = 0; i < size; ++i) out[i] = ToHostFloat(raw[i]);
    return out;
  }
};

template <typename T>
StorageType StorageOf();
template <>
StorageType StorageOf<float>() { return StorageType::kFloat32; }
template <>
StorageType StorageOf<__half>() { return StorageType::kFloat16; }
template <>
StorageType StorageOf<__nv_bfloat16>() { return StorageType::kBFloat16; }

// Runs forward + backward on the GPU in storage type T into `out` (float32 host
// results), the backward in fixed order or with atomics. Returns 0, or what a
// launcher returned (kLaunchUnsupported for a call that local_relation_support.h
// rejects).
template <typename T>
int GpuRun(const Geometry& g, const Tensors& in, Tensors* out, bool fixed_order = false) {
  Buffer<T> query(in.query), key(in.key), value(in.value), d_output(in.d_output);
  Buffer<float> prior(in.prior);
  const size_t out_pixels = g.batch * g.out_height * g.out_width;
  Buffer<T> output(out_pixels * g.channels), d_query(in.query.size()), d_key(in.key.size()),
      d_value(in.value.size());
  Buffer<float> lse(out_pixels * g.groups), d_prior(in.prior.size()),
      workspace(LocalRelationBackwardWorkspace(g, fixed_order));
  int status = LaunchLocalRelationForward(g, StorageOf<T>(), query.data, key.data, value.data,
                                          prior.data, output.data, lse.data, nullptr);
  if (status != 0) return status;
  status = LaunchLocalRelationBackward(
      g, StorageOf<T>(), query.data, key.data, value.data, prior.data, output.data, lse.data,
      d_output.data, d_query.data, d_key.data, d_value.data, d_prior.data, workspace.data,
      fixed_order, nullptr);
  if (status != 0) return status;
  CHECK_CUDA(cudaDeviceSynchronize());
  out->output = output.Host();
  out->lse = lse.Host();
  out->d_query = d_query.Host();
  out->d_key = d_key.Host();
  out->d_value = d_value.Host();
  out->d_prior = d_prior.Host();
  return 0;
}

// Largest |a - b| over max(1, largest |b|): an error relative to the tensor's
// scale; infinite when the sizes differ or a difference is NaN.
double ScaledError(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double error = 0, scale = 1;
  for (size_t i = 0; i < a.size(); ++i) {
    const double difference = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (std::isnan(difference)) return INFINITY;
    error = std::max(error, difference);
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return error / scale;
}

double WorstError(const Tensors& gpu, const Tensors& cpu) {
  return std::max({ScaledError(gpu.output, cpu.output), ScaledError(gpu.lse, cpu.lse),
                   ScaledError(gpu.d_query, cpu.d_query), ScaledError(gpu.d_key, cpu.d_key),
                   ScaledError(gpu.d_value, cpu.d_value), ScaledError(gpu.d_prior, cpu.d_prior)});
}

// The inputs as storage type T holds them (prior stays float32).
template <typename T>
Tensors RoundedTo(const Tensors& in) {
  auto round = [](std::vector<float> v) {
    for (float& x : v) x = ToHostFloat(FromFloat<T>(x));
    return v;
  };
  Tensors out;
  out.query = round(in.query);
  out.key = round(in.key);
  out.value = round(in.value);
  out.d_output = round(in.d_output);
  out.prior = in.prior;
  return out;
}

// Worst scaled error of the GPU kernels in storage type T against the CPU
// kernels on the same (rounded) inputs: what is left is the rounding of the
// stored results, not of the inputs (which would flip the sign of
// |q - k|'s derivative when q and k round together).
// A call the launchers reject is an infinite error here (the random cases are
// all supported).
template <typename T>
double ErrorAgainstCpu(const Geometry& g, const Tensors& inputs) {
  Tensors reference = RoundedTo<T>(inputs), gpu;
  CpuReference(g, reference);
  const int status = GpuRun<T>(g, reference, &gpu);
  if (status == kLaunchUnsupported) return INFINITY;
  CHECK_CUDA(static_cast<cudaError_t>(status));
  return WorstError(gpu, reference);
}

Case RandomCase(std::mt19937& rng) {
  auto pick = [&](std::initializer_list<int> options) {
    std::vector<int> v(options);
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
  };
  Case c;
  c.batch = std::uniform_int_distribution<int>(1, 4)(rng);
  c.height = std::uniform_int_distribution<int>(1, 17)(rng);
  c.width = std::uniform_int_distribution<int>(1, 17)(rng);
  c.group_size = pick({1, 2, 4, 8, 16, 32});
  c.channels = c.group_size * std::uniform_int_distribution<int>(1, c.group_size >= 16 ? 3 : 6)(rng);
  c.kernel_size = pick({1, 3, 5, 7, 9});
  c.strides = pick({1, 2});
  c.dilation = pick({1, 1, 2});
  c.composability = pick({kSquaredDifference, kDot, kAbsDifference});
  return c;
}

// One line of --support: "kernel_size channels_per_group dtype strides".
// Runs that call (B = 2, 9 x 7 input, two groups) through the launchers and
// prints "ran <worst scaled error>" or "unsupported". The test of the Python
// gate compares these answers with its own (tests/test_local_relation_gate.py).
int SupportLine(const char* line) {
  int kernel_size = 0, group_size = 0, strides = 0;
  char dtype[32] = {0};
  if (std::sscanf(line, "%d %d %31s %d", &kernel_size, &group_size, dtype, &strides) != 4) {
    std::fprintf(stderr, "--support: cannot read '%s'\n", line);
    return 2;
  }
  std::printf("%d %d %s %d: ", kernel_size, group_size, dtype, strides);
  const Geometry g = MakeGeometry(2, 9, 7, 2 * group_size, 2, kernel_size, strides, 1,
                                  kSquaredDifference, 0.7f);
  std::mt19937 rng(kernel_size * 1000 + group_size);
  const Tensors inputs = RandomInputs(g, rng);
  Tensors reference, gpu;
  int status;
  if (!std::strcmp(dtype, "float32")) {
    reference = RoundedTo<float>(inputs);
    status = GpuRun<float>(g, reference, &gpu);
  } else if (!std::strcmp(dtype, "float16")) {
    reference = RoundedTo<__half>(inputs);
    status = GpuRun<__half>(g, reference, &gpu);
  } else if (!std::strcmp(dtype, "bfloat16")) {
    reference = RoundedTo<__nv_bfloat16>(inputs);
    status = GpuRun<__nv_bfloat16>(g, reference, &gpu);
  } else {  // no storage type: the launchers must refuse before touching memory
    status = LaunchLocalRelationForward(g, static_cast<StorageType>(-1), nullptr, nullptr,
                                        nullptr, nullptr, nullptr, nullptr, nullptr);
  }
  if (status == kLaunchUnsupported) {
    std::printf("unsupported\n");
    return 0;
  }
  CHECK_CUDA(static_cast<cudaError_t>(status));
  CpuReference(g, reference);
  const double error = WorstError(gpu, reference);
  const double tolerance = !std::strcmp(dtype, "float32") ? 1e-4
                           : !std::strcmp(dtype, "float16") ? 1e-2 : 5e-2;
  std::printf("ran %.2e\n", error);
  return error <= tolerance ? 0 : 1;
}

#if !defined(KERAS_RELNET_CUDA_EMULATION)
// Median of `repeats` timed runs of `step` (CUDA events), after one warm-up.
float TimeMs(const std::function<void()>& step, int repeats) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  step();
  std::vector<float> times;
  for (int r = 0; r < repeats; ++r) {
    cudaEventRecord(start);
    step();
    cudaEventRecord(stop);
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::nth_element(times.begin(), times.begin() + repeats / 2, times.end());
  return times[repeats / 2];
}

// Kernel times at the LR-Net-50 stage shapes (k = 7, m = 8, float32), one
// "TIME shape batch fwd_ms fwd_bwd_ms" line each, for
// harness/gpu_report.py to put beside PyTorch's depthwise convolution.
void Benchmark() {
  std::printf("\nLR-Net-50 stage shapes, k = 7, m = 8, float32, median of 30\n");
  const int shapes[][2] = {{56, 104}, {28, 200}, {14, 400}, {7, 800}};
  std::mt19937 rng(0);
  for (int batch : {8, 32}) {
    for (const auto& shape : shapes) {
      const Case c{batch, shape[0], shape[0], shape[1], 8, 7, 1, 1, kSquaredDifference};
      const Geometry g = GeometryOf(c);
      Tensors t = RandomInputs(g, rng);
      Buffer<float> query(t.query), key(t.key), value(t.value), prior(t.prior),
          d_output(t.d_output);
      const size_t out_pixels = g.batch * g.out_height * g.out_width;
      Buffer<float> output(out_pixels * g.channels), lse(out_pixels * g.groups),
          workspace(LocalRelationBackwardWorkspace(g, false)), d_query(t.query.size()),
          d_key(t.key.size()), d_value(t.value.size()), d_prior(t.prior.size());
      auto forward = [&] {
        CHECK_CUDA(static_cast<cudaError_t>(LaunchLocalRelationForward(
            g, StorageType::kFloat32, query.data, key.data, value.data, prior.data, output.data,
            lse.data, nullptr)));
      };
      auto forward_backward = [&] {
        forward();
        CHECK_CUDA(static_cast<cudaError_t>(LaunchLocalRelationBackward(
            g, StorageType::kFloat32, query.data, key.data, value.data, prior.data, output.data,
            lse.data, d_output.data, d_query.data, d_key.data, d_value.data, d_prior.data,
            workspace.data, false, nullptr)));
      };
      const float forward_ms = TimeMs(forward, 30), step_ms = TimeMs(forward_backward, 30);
      std::printf("TIME %dx%dx%d %d %.4f %.4f\n", shape[0], shape[0], shape[1], batch,
                  forward_ms, step_ms);
    }
  }
}
#endif

}  // namespace

bool BitIdentical(const Tensors& a, const Tensors& b) {
  auto same = [](const std::vector<float>& x, const std::vector<float>& y) {
    return x.size() == y.size() && !std::memcmp(x.data(), y.data(), x.size() * sizeof(float));
  };
  return same(a.output, b.output) && same(a.lse, b.lse) && same(a.d_query, b.d_query) &&
         same(a.d_key, b.d_key) && same(a.d_value, b.d_value) && same(a.d_prior, b.d_prior);
}

// Sets the emulation's block and warp order (a GPU has none to set).
void Schedule(unsigned seed) {
#if defined(KERAS_RELNET_CUDA_EMULATION)
  emulation::SetSchedule(seed);
#else
  (void)seed;
#endif
}

// The fixed-order backward (TensorFlow's op determinism) on random cases,
// float32: three runs, under three schedules where the emulation has them,
// must be bit-identical and agree with the CPU kernels. The atomics' backward
// is run the same way, and the cases where its runs differ are counted (they
// may; that is why the fixed order exists). Returns the failures.
int CheckDeterminism(int cases, unsigned seed) {
  std::mt19937 rng(seed);
  int failures = 0, atomics_differ = 0;
  double worst = 0;
  for (int index = 0; index < cases; ++index) {
    const Case c = RandomCase(rng);
    const Geometry g = GeometryOf(c);
    Tensors reference = RandomInputs(g, rng);
    CpuReference(g, reference);
    Tensors fixed[3], atomics[2];
    for (unsigned run = 0; run < 3; ++run) {
      Schedule(run);
      CHECK_CUDA(static_cast<cudaError_t>(GpuRun<float>(g, reference, &fixed[run], true)));
      if (run < 2) CHECK_CUDA(static_cast<cudaError_t>(GpuRun<float>(g, reference, &atomics[run])));
    }
    Schedule(0);
    const double error = WorstError(fixed[0], reference);
    worst = std::max(worst, error);
    const bool identical = BitIdentical(fixed[0], fixed[1]) && BitIdentical(fixed[0], fixed[2]);
    atomics_differ += !BitIdentical(atomics[0], atomics[1]);
    if (!identical || error > 1e-4) {
      ++failures;
      std::printf("NONDETERMINISTIC OR WRONG B=%d H=%d W=%d C=%d m=%d k=%d s=%d d=%d: "
                  "identical %d, error %.2e\n",
                  c.batch, c.height, c.width, c.channels, c.group_size, c.kernel_size, c.strides,
                  c.dilation, identical, error);
    }
  }
  std::printf("determinism: %d random cases, %d failures; fixed-order backward bit-identical "
              "over 3 runs, worst scaled error %.2e; the atomics' backward differed between two "
              "runs in %d cases\n",
              cases, failures, worst, atomics_differ);
  return failures;
}

int main(int argc, char** argv) {
  int cases = 200;
  unsigned seed = 0;
  bool benchmark = true, support = false, determinism = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--cases") && i + 1 < argc) cases = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--seed") && i + 1 < argc) seed = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--no-benchmark")) benchmark = false;
    else if (!std::strcmp(argv[i], "--support")) support = true;
    else if (!std::strcmp(argv[i], "--determinism")) determinism = true;
    else {
      std::fprintf(stderr,
                   "usage: %s [--cases N] [--seed S] [--no-benchmark] [--support] "
                   "[--determinism]\n",
                   argv[0]);
      return 2;
    }
  }
  if (support) {  // one call per line of standard input
    char line[256];
    int worst = 0;
    while (std::fgets(line, sizeof(line), stdin)) {
      if (line[0] == '\n') continue;
      worst = std::max(worst, SupportLine(line));
    }
    return worst;
  }
#if defined(KERAS_RELNET_CUDA_EMULATION)
  std::printf("device: CPU emulation of the CUDA kernels (harness/cuda_emulation.h)\n");
  (void)benchmark;
#else
  cudaDeviceProp properties;
  CHECK_CUDA(cudaGetDeviceProperties(&properties, 0));
  std::printf("device: %s (sm_%d%d)\n", properties.name, properties.major, properties.minor);
#endif
  if (determinism) return CheckDeterminism(cases, seed) ? 1 : 0;
  std::mt19937 rng(seed);
  double worst32 = 0, worst16 = 0, worst_bf16 = 0;
  int failures = 0;
  for (int index = 0; index < cases; ++index) {
    const Case c = RandomCase(rng);
    const Geometry g = GeometryOf(c);
    const Tensors t = RandomInputs(g, rng);
    const double e32 = ErrorAgainstCpu<float>(g, t);
    const double e16 = ErrorAgainstCpu<__half>(g, t);
    const double ebf16 = ErrorAgainstCpu<__nv_bfloat16>(g, t);
    worst32 = std::max(worst32, e32);
    worst16 = std::max(worst16, e16);
    worst_bf16 = std::max(worst_bf16, ebf16);
    if (e32 > 1e-4 || e16 > 1e-2 || ebf16 > 5e-2) {
      ++failures;
      std::printf("MISMATCH B=%d H=%d W=%d C=%d m=%d k=%d s=%d d=%d comp=%d: float32 %.2e "
                  "float16 %.2e bfloat16 %.2e\n",
                  c.batch, c.height, c.width, c.channels, c.group_size, c.kernel_size, c.strides,
                  c.dilation, c.composability, e32, e16, ebf16);
    }
  }
  std::printf("%d random cases, %d mismatches; worst scaled error: float32 %.2e, float16 %.2e, "
              "bfloat16 %.2e\n",
              cases, failures, worst32, worst16, worst_bf16);
#if !defined(KERAS_RELNET_CUDA_EMULATION)
  if (benchmark) Benchmark();
#endif
  return failures ? 1 : 0;
}
