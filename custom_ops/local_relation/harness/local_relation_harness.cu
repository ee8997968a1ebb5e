// Standalone check of the CUDA local relation kernels, without TensorFlow.
//
// Runs the CUDA forward and backward kernels on random shapes (strides 1/2,
// k in {3,5,7,9}, m in {1,4,8,16}, dilation 1/2, every composability, odd
// sizes, B = 1..4) and compares them with the CPU kernels of
// local_relation_cpu.h (themselves tested against the Python reference), then
// times the kernels at the LR-Net-50 stage shapes (batch 8, k = 7, m = 8).
//
//   g++ -O3 -march=native -fno-trapping-math -std=c++17 -I.. -c cpu_reference.cc
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -I.. \
//        local_relation_harness.cu ../local_relation_kernels.cu cpu_reference.o -o harness
//   (or `make cuda-harness` at the repository root)
//   ./harness [--cases N] [--seed S]
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

// Runs forward + backward on the GPU in storage type T; returns float32 host results.
template <typename T>
Tensors GpuRun(const Geometry& g, const Tensors& in) {
  Buffer<T> query(in.query), key(in.key), value(in.value), d_output(in.d_output);
  Buffer<float> prior(in.prior);
  const size_t out_pixels = g.batch * g.out_height * g.out_width;
  Buffer<T> output(out_pixels * g.channels), d_query(in.query.size()), d_key(in.key.size()),
      d_value(in.value.size());
  Buffer<float> lse(out_pixels * g.groups), dot(out_pixels * g.groups), d_prior(in.prior.size());
  CHECK_CUDA(static_cast<cudaError_t>(LaunchLocalRelationForward(
      g, StorageOf<T>(), query.data, key.data, value.data, prior.data, output.data, lse.data,
      nullptr)));
  CHECK_CUDA(static_cast<cudaError_t>(LaunchLocalRelationBackward(
      g, StorageOf<T>(), query.data, key.data, value.data, prior.data, output.data, lse.data,
      d_output.data, d_query.data, d_key.data, d_value.data, d_prior.data, dot.data, nullptr)));
  CHECK_CUDA(cudaDeviceSynchronize());
  Tensors out;
  out.output = output.Host();
  out.lse = lse.Host();
  out.d_query = d_query.Host();
  out.d_key = d_key.Host();
  out.d_value = d_value.Host();
  out.d_prior = d_prior.Host();
  return out;
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
template <typename T>
double ErrorAgainstCpu(const Geometry& g, const Tensors& inputs) {
  Tensors reference = RoundedTo<T>(inputs);
  CpuReference(g, reference);
  return WorstError(GpuRun<T>(g, reference), reference);
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
  c.group_size = pick({1, 4, 8, 16});
  c.channels = c.group_size * std::uniform_int_distribution<int>(1, 6)(rng);
  c.kernel_size = pick({3, 5, 7, 9});
  c.strides = pick({1, 2});
  c.dilation = pick({1, 1, 2});
  c.composability = pick({kSquaredDifference, kDot, kAbsDifference});
  return c;
}

#if !defined(KERAS_RELNET_CUDA_EMULATION)
float TimeMs(const std::function<void()>& step, int repeats) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  step();  // warm-up
  cudaEventRecord(start);
  for (int r = 0; r < repeats; ++r) step();
  cudaEventRecord(stop);
  CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  return ms / repeats;
}

void Benchmark() {
  std::printf("\nLR-Net-50 stage shapes, batch 8, k = 7, m = 8 (float32, median-free mean of 20)\n");
  std::printf("%12s %10s %12s %14s\n", "shape", "fwd ms", "fwd+bwd ms", "fwd GB/s (in+out)");
  const int shapes[][2] = {{56, 104}, {28, 200}, {14, 400}, {7, 800}};
  std::mt19937 rng(0);
  for (const auto& shape : shapes) {
    const Case c{8, shape[0], shape[0], shape[1], 8, 7, 1, 1, kSquaredDifference};
    const Geometry g = GeometryOf(c);
    Tensors t = RandomInputs(g, rng);
    Buffer<float> query(t.query), key(t.key), value(t.value), prior(t.prior), d_output(t.d_output);
    const size_t out_pixels = g.batch * g.out_height * g.out_width;
    Buffer<float> output(out_pixels * g.channels), lse(out_pixels * g.groups),
        dot(out_pixels * g.groups), d_query(t.query.size()), d_key(t.key.size()),
        d_value(t.value.size()), d_prior(t.prior.size());
    auto forward = [&] {
      LaunchLocalRelationForward(g, StorageType::kFloat32, query.data, key.data, value.data,
                                 prior.data, output.data, lse.data, nullptr);
    };
    auto forward_backward = [&] {
      forward();
      LaunchLocalRelationBackward(g, StorageType::kFloat32, query.data, key.data, value.data,
                                  prior.data, output.data, lse.data, d_output.data, d_query.data,
                                  d_key.data, d_value.data, d_prior.data, dot.data, nullptr);
    };
    const float forward_ms = TimeMs(forward, 20), step_ms = TimeMs(forward_backward, 20);
    const double bytes = 2.0 * t.value.size() * sizeof(float);
    std::printf("%5dx%dx%-4d %10.3f %12.3f %14.1f\n", shape[0], shape[0], shape[1], forward_ms,
                step_ms, bytes / (forward_ms * 1e6));
  }
}
#endif

}  // namespace

int main(int argc, char** argv) {
  int cases = 200;
  unsigned seed = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--cases")) cases = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--seed")) seed = std::atoi(argv[i + 1]);
  }
#if defined(KERAS_RELNET_CUDA_EMULATION)
  std::printf("device: CPU emulation of the CUDA kernels (harness/cuda_emulation.h)\n");
#else
  cudaDeviceProp properties;
  CHECK_CUDA(cudaGetDeviceProperties(&properties, 0));
  std::printf("device: %s (sm_%d%d)\n", properties.name, properties.major, properties.minor);
#endif
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
  Benchmark();
#endif
  return failures ? 1 : 0;
}
