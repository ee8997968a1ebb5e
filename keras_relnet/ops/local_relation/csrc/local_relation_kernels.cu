// CUDA kernels of the local relation op. No TensorFlow: the TF GPU kernels
// (local_relation_gpu.cc) and the standalone harness (harness/) call the
// launchers declared in local_relation_kernels.h.
//
// Mapping: a warp owns one pixel and 32 consecutive channels (lane = channel),
// so value/output rows are read and written coalesced, and the m lanes of a
// group (m | 32) reduce with shuffles. Every lane computes its group's logit
// itself (m-fold redundant scalar work, no synchronisation).
//
// Forward: a block owns a TILE x TILE tile of output pixels and one 32-channel
// chunk; it stages the haloed input tile of values and keys in shared memory
// once, then its warps run an online softmax over the window of each pixel
// (running max, sum and weighted sum in registers) and write the output and
// the per-(pixel, group) log-sum-exp. Windows too large for shared memory
// (big k * dilation) read global memory directly.
//
// Backward: one pass over output pixels (d_query, dot = sum_t dy * y, d_prior
// through shared-memory sums and one global atomic per block and cell) and one
// pass over input pixels that gathers d_key and d_value from the output pixels
// whose windows hold it (no scatter). Both recompute the weights as
// exp(L - lse). The atomics make d_prior's rounding depend on the order the
// blocks run; with `fixed_order` (TensorFlow's op determinism) the first pass
// runs one warp per block over a fixed run of pixels, each block stores its
// prior tile as a partial, and a third kernel adds the partials in block
// order: bit-identical results from run to run.
//
// Compiled with -DKERAS_RELNET_CUDA_EMULATION by a host compiler, the same
// source runs on the CPU under custom_ops/harness/cuda_emulation.h (`make cuda-emulation`,
// which puts custom_ops/ on the include path).
#if defined(KERAS_RELNET_CUDA_EMULATION)
#include "harness/cuda_emulation.h"
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
// kernel<<<grid, block, shared, stream>>>, spelled so that the emulation can replace it.
#define KERAS_RELNET_LAUNCH(grid, block, shared, stream, ...) \
  __VA_ARGS__<<<grid, block, shared, stream>>>
#endif

#include <type_traits>

#include "local_relation_kernels.h"

namespace keras_relnet {
namespace {

constexpr int kWarp = kCudaWarp;
constexpr int kWarpsPerBlock = 8;

#if defined(KERAS_RELNET_CUDA_EMULATION)
using emulation::DynamicShared;
#else
__device__ __forceinline__ float* DynamicShared() {
  extern __shared__ float dynamic_shared[];
  return dynamic_shared;
}
#endif

__device__ __forceinline__ float Load(const float* p, int64_t i) { return __ldg(p + i); }
__device__ __forceinline__ float Load(const __half* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float Load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void Store(float* p, int64_t i, float x) { p[i] = x; }
__device__ __forceinline__ void Store(__half* p, int64_t i, float x) { p[i] = __float2half(x); }
__device__ __forceinline__ void Store(__nv_bfloat16* p, int64_t i, float x) {
  p[i] = __float2bfloat16(x);
}

// Sum over the m lanes of a group (m a power of two up to 32, groups aligned).
__device__ __forceinline__ float GroupSum(float x, int m) {
  for (int offset = m / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

template <int kComposability>
__device__ __forceinline__ float Logit(const Geometry& g, float q, float k, float prior) {
  return g.scale * Compose<kComposability>(q, k) + prior;
}

// Input-tile origin and extent of a TILE x TILE output tile.
struct Tile {
  int size, span;  // output pixels per side, input pixels per side
  __device__ int Origin(const Geometry& g, int out_origin) const {
    return g.strides * out_origin - g.dilation * g.radius;
  }
};

template <typename T, int kComposability, bool kShared>
__global__ void ForwardKernel(Geometry g, Tile tile, const T* __restrict__ query,
                              const T* __restrict__ key, const T* __restrict__ value,
                              const float* __restrict__ prior, T* __restrict__ output,
                              float* __restrict__ lse) {
  float* shared = DynamicShared();
  const int tiles_w = (g.out_width + tile.size - 1) / tile.size;
  const int tiles_h = (g.out_height + tile.size - 1) / tile.size;
  const int64_t b = blockIdx.x / (tiles_h * tiles_w);
  const int tile_index = blockIdx.x % (tiles_h * tiles_w);
  const int i0 = (tile_index / tiles_w) * tile.size, j0 = (tile_index % tiles_w) * tile.size;
  const int c0 = blockIdx.y * kWarp;
  const int m = g.group_size, chunk_groups = CudaChunkGroups(m);
  const int y0 = tile.Origin(g, i0), x0 = tile.Origin(g, j0);
  const int span_pixels = tile.span * tile.span;
  float* value_tile = shared;                               // [span^2, 32]
  float* key_tile = shared + span_pixels * kWarp;           // [span^2, chunk_groups]
  if (kShared) {
    for (int index = threadIdx.x; index < span_pixels * kWarp; index += blockDim.x) {
      const int pixel = index / kWarp, channel = c0 + index % kWarp;
      const int y = y0 + pixel / tile.span, x = x0 + pixel % tile.span;
      const bool inside = y >= 0 && y < g.height && x >= 0 && x < g.width && channel < g.channels;
      value_tile[index] =
          inside ? Load(value, ((b * g.height + y) * g.width + x) * g.channels + channel) : 0.f;
    }
    for (int index = threadIdx.x; index < span_pixels * chunk_groups; index += blockDim.x) {
      const int pixel = index / chunk_groups, group = c0 / m + index % chunk_groups;
      const int y = y0 + pixel / tile.span, x = x0 + pixel % tile.span;
      const bool inside = y >= 0 && y < g.height && x >= 0 && x < g.width && group < g.groups;
      key_tile[index] =
          inside ? Load(key, ((b * g.height + y) * g.width + x) * g.groups + group) : 0.f;
    }
    __syncthreads();
  }
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int channel = c0 + lane;
  const bool active = channel < g.channels;
  const int group = active ? channel / m : 0, local_group = lane / m;
  for (int p = warp; p < tile.size * tile.size; p += blockDim.x / kWarp) {
    const int i = i0 + p / tile.size, j = j0 + p % tile.size;
    if (i >= g.out_height || j >= g.out_width) continue;  // uniform across the warp
    const int64_t pixel = (b * g.out_height + i) * g.out_width + j;
    const float q = Load(query, pixel * g.groups + group);
    float peak = -INFINITY, total = 0.f, sum = 0.f;
    ForEachWindowCell(g, i, j, [&](int u, int v, int y, int x) {
      float k, val;
      if (kShared) {
        const int local = (y - y0) * tile.span + (x - x0);
        k = key_tile[local * chunk_groups + local_group];
        val = value_tile[local * kWarp + lane];
      } else {
        const int64_t at = (b * g.height + y) * g.width + x;
        k = Load(key, at * g.groups + group);
        val = active ? Load(value, at * g.channels + channel) : 0.f;
      }
      const float logit = Logit<kComposability>(
          g, q, k, __ldg(prior + group * g.num_cells() + u * g.kernel_size + v));
      if (logit > peak) {  // online softmax: rescale what was summed so far
        const float rescale = expf(peak - logit);
        total *= rescale;
        sum *= rescale;
        peak = logit;
      }
      const float weight = expf(logit - peak);
      total += weight;
      sum += weight * val;
    });
    if (active) {
      Store(output, pixel * g.channels + channel, sum / total);
      if (channel % m == 0) lse[pixel * g.groups + group] = peak + logf(total);
    }
  }
}

// The block's prior-gradient tile in shared memory, [k*k, chunk_groups], zeroed.
__device__ __forceinline__ float* ZeroedPriorTile(const Geometry& g) {
  float* tile = DynamicShared();
  for (int index = threadIdx.x; index < g.num_cells() * CudaChunkGroups(g.group_size);
       index += blockDim.x)
    tile[index] = 0.f;
  __syncthreads();
  return tile;
}

// After every warp has added into the tile: store(n, sum) for each of its
// sums, n = group * k*k + cell indexing d_prior [G, k, k].
template <typename Store>
__device__ __forceinline__ void ForEachPriorTileSum(const Geometry& g, const float* tile,
                                                    Store&& store) {
  const int chunk_groups = CudaChunkGroups(g.group_size);
  const int first_group = blockIdx.y * kWarp / g.group_size;
  __syncthreads();
  for (int index = threadIdx.x; index < g.num_cells() * chunk_groups; index += blockDim.x) {
    const int group = first_group + index % chunk_groups;
    if (group < g.groups) store(static_cast<int64_t>(group) * g.num_cells() + index / chunk_groups,
                                tile[index]);
  }
}

// One output pixel of the backward pass on one warp: d_query, dot, and each
// window cell's d_logit added by the group's leader lane into
// d_prior_tile[cell * chunk_groups + local group] with `add`.
template <typename T, int kComposability, typename Add>
__device__ __forceinline__ void BackwardOutputPixel(
    const Geometry& g, int64_t pixel, const T* __restrict__ query, const T* __restrict__ key,
    const T* __restrict__ value, const float* __restrict__ prior, const T* __restrict__ output,
    const float* __restrict__ lse, const T* __restrict__ d_output, T* __restrict__ d_query,
    float* __restrict__ dot, float* d_prior_tile, Add&& add) {
  const int m = g.group_size, chunk_groups = CudaChunkGroups(m);
  const int lane = threadIdx.x % kWarp;
  const int channel = blockIdx.y * kWarp + lane;
  const bool active = channel < g.channels;
  const int group = active ? channel / m : 0, local_group = lane / m;
  const bool leader = active && channel % m == 0;
  const int j = pixel % g.out_width;
  const int i = (pixel / g.out_width) % g.out_height;
  const int64_t b = pixel / (static_cast<int64_t>(g.out_width) * g.out_height);
  const float dy = active ? Load(d_output, pixel * g.channels + channel) : 0.f;
  const float y_out = active ? Load(output, pixel * g.channels + channel) : 0.f;
  const float dot_value = GroupSum(dy * y_out, m);
  if (leader) dot[pixel * g.groups + group] = dot_value;
  const float q = Load(query, pixel * g.groups + group);
  const float pixel_lse = active ? lse[pixel * g.groups + group] : 0.f;
  float d_q = 0.f;
  ForEachWindowCell(g, i, j, [&](int u, int v, int y, int x) {
    const int cell = u * g.kernel_size + v;
    const int64_t at = (b * g.height + y) * g.width + x;
    const float k = Load(key, at * g.groups + group);
    const float val = active ? Load(value, at * g.channels + channel) : 0.f;
    const float d_weight = GroupSum(dy * val, m);
    const float weight =
        expf(Logit<kComposability>(g, q, k, __ldg(prior + group * g.num_cells() + cell)) -
             pixel_lse);
    const float d_logit = weight * (d_weight - dot_value);
    d_q += g.scale * d_logit * ComposeQueryPartial<kComposability>(q, k);
    if (leader) add(&d_prior_tile[cell * chunk_groups + local_group], d_logit);
  });
  if (leader) Store(d_query, pixel * g.groups + group, d_q);
}

template <typename T, int kComposability>
__global__ void BackwardOutputKernel(Geometry g, const T* __restrict__ query,
                                     const T* __restrict__ key, const T* __restrict__ value,
                                     const float* __restrict__ prior, const T* __restrict__ output,
                                     const float* __restrict__ lse, const T* __restrict__ d_output,
                                     T* __restrict__ d_query, float* __restrict__ dot,
                                     float* __restrict__ d_prior) {
  float* d_prior_tile = ZeroedPriorTile(g);
  const int64_t pixels = g.batch * g.out_height * g.out_width;
  const int64_t pixel = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  if (pixel < pixels) {  // uniform across the warp
    BackwardOutputPixel<T, kComposability>(
        g, pixel, query, key, value, prior, output, lse, d_output, d_query, dot, d_prior_tile,
        [](float* sum, float x) { atomicAdd(sum, x); });
  }
  ForEachPriorTileSum(g, d_prior_tile, [&](int64_t n, float sum) {
    if (sum != 0.f) atomicAdd(&d_prior[n], sum);
  });
}

// The fixed-order variant (under TensorFlow's op determinism): one warp per
// block walks `pixels_per_block` output pixels in order, so each slot of its
// prior tile has one writer, and the block stores the tile as its own partial
// [G, k*k] slice of `partials` (no atomics); SumPriorPartials adds the
// blocks' partials in block order.
template <typename T, int kComposability>
__global__ void BackwardOutputFixedOrderKernel(
    Geometry g, int64_t pixels_per_block, const T* __restrict__ query, const T* __restrict__ key,
    const T* __restrict__ value, const float* __restrict__ prior, const T* __restrict__ output,
    const float* __restrict__ lse, const T* __restrict__ d_output, T* __restrict__ d_query,
    float* __restrict__ dot, float* __restrict__ partials) {
  float* d_prior_tile = ZeroedPriorTile(g);
  const int64_t pixels = g.batch * g.out_height * g.out_width;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * pixels_per_block;
  const int64_t last = first + pixels_per_block < pixels ? first + pixels_per_block : pixels;
  for (int64_t pixel = first; pixel < last; ++pixel) {
    BackwardOutputPixel<T, kComposability>(
        g, pixel, query, key, value, prior, output, lse, d_output, d_query, dot, d_prior_tile,
        [](float* sum, float x) { *sum += x; });
  }
  float* partial = partials + static_cast<int64_t>(blockIdx.x) * g.groups * g.num_cells();
  ForEachPriorTileSum(g, d_prior_tile, [&](int64_t n, float sum) { partial[n] = sum; });
}

// d_prior[n] = the sum of partials[block][n] over the blocks, in block order.
__global__ void SumPriorPartials(int64_t blocks, int64_t size, const float* __restrict__ partials,
                                 float* __restrict__ d_prior) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= size) return;
  float sum = 0.f;
  for (int64_t block = 0; block < blocks; ++block) sum += partials[block * size + n];
  d_prior[n] = sum;
}

template <typename T, int kComposability>
__global__ void BackwardInputKernel(Geometry g, const T* __restrict__ query,
                                    const T* __restrict__ key, const T* __restrict__ value,
                                    const float* __restrict__ prior, const float* __restrict__ lse,
                                    const T* __restrict__ d_output, const float* __restrict__ dot,
                                    T* __restrict__ d_key, T* __restrict__ d_value) {
  const int m = g.group_size;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int channel = blockIdx.y * kWarp + lane;
  const bool active = channel < g.channels;
  const int group = active ? channel / m : 0;
  const int64_t pixels = g.batch * g.height * g.width;
  const int64_t pixel = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (pixel >= pixels) return;  // uniform across the warp
  const int x = pixel % g.width;
  const int y = (pixel / g.width) % g.height;
  const int64_t b = pixel / (static_cast<int64_t>(g.width) * g.height);
  const float k = Load(key, pixel * g.groups + group);
  const float val = active ? Load(value, pixel * g.channels + channel) : 0.f;
  float d_k = 0.f, d_v = 0.f;
  ForEachWindowOwner(g, y, x, [&](int u, int v, int i, int j) {
    const int64_t out = (b * g.out_height + i) * g.out_width + j;
    const float q = Load(query, out * g.groups + group);
    const float dy = active ? Load(d_output, out * g.channels + channel) : 0.f;
    const float d_weight = GroupSum(dy * val, m);
    const float weight = expf(
        Logit<kComposability>(g, q, k, __ldg(prior + group * g.num_cells() + u * g.kernel_size + v)) -
        lse[out * g.groups + group]);
    const float d_logit = weight * (d_weight - dot[out * g.groups + group]);
    d_k += g.scale * d_logit * ComposeKeyPartial<kComposability>(q, k);
    d_v += weight * dy;
  });
  if (active) {
    Store(d_value, pixel * g.channels + channel, d_v);
    if (channel % m == 0) Store(d_key, pixel * g.groups + group, d_k);
  }
}

// The largest tile whose staged input fits in shared memory, or 0.
Tile ChooseTile(const Geometry& g) {
  const int chunk_groups = CudaChunkGroups(g.group_size);
  for (int size : {8, 4, 2, 1}) {
    const int span = (size - 1) * g.strides + (g.kernel_size - 1) * g.dilation + 1;
    if (static_cast<int64_t>(span) * span * (kWarp + chunk_groups) * 4 <= kCudaSharedMemoryBytes)
      return Tile{size, span};
  }
  return Tile{8, 0};
}

template <typename Fn>
void WithComposability(int composability, Fn&& fn) {
  switch (composability) {
    case kDot: return fn(std::integral_constant<int, kDot>());
    case kAbsDifference: return fn(std::integral_constant<int, kAbsDifference>());
    default: return fn(std::integral_constant<int, kSquaredDifference>());
  }
}

template <typename T>
int Forward(const Geometry& g, const T* query, const T* key, const T* value, const float* prior,
            T* output, float* lse, cudaStream_t stream) {
  const Tile tile = ChooseTile(g);
  const int64_t tiles = g.batch * ((g.out_height + tile.size - 1) / tile.size) *
                        ((g.out_width + tile.size - 1) / tile.size);
  const dim3 grid(static_cast<unsigned>(tiles), (g.channels + kWarp - 1) / kWarp);
  const int chunk_groups = CudaChunkGroups(g.group_size);
  const size_t shared = tile.span ? static_cast<size_t>(tile.span) * tile.span *
                                        (kWarp + chunk_groups) * sizeof(float)
                                  : 0;
  WithComposability(g.composability, [&](auto composability) {
    constexpr int kComposability = decltype(composability)::value;
    if (tile.span) {
      KERAS_RELNET_LAUNCH(grid, kWarp * kWarpsPerBlock, shared, stream,
                          ForwardKernel<T, kComposability, true>)(g, tile, query, key, value,
                                                                  prior, output, lse);
    } else {
      KERAS_RELNET_LAUNCH(grid, kWarp * kWarpsPerBlock, 0, stream,
                          ForwardKernel<T, kComposability, false>)(g, tile, query, key, value,
                                                                   prior, output, lse);
    }
  });
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int Backward(const Geometry& g, const T* query, const T* key, const T* value, const float* prior,
             const T* output, const float* lse, const T* d_output, T* d_query, T* d_key,
             T* d_value, float* d_prior, float* workspace, bool fixed_order,
             cudaStream_t stream) {
  const int64_t prior_size = static_cast<int64_t>(g.groups) * g.num_cells();
  if (!fixed_order || g.batch == 0) {
    const cudaError_t zeroed = cudaMemsetAsync(d_prior, 0, sizeof(float) * prior_size, stream);
    if (zeroed != cudaSuccess || g.batch == 0) return static_cast<int>(zeroed);
  }
  const unsigned chunks = (g.channels + kWarp - 1) / kWarp;
  const int64_t out_pixels = g.batch * g.out_height * g.out_width;
  const int64_t in_pixels = g.batch * g.height * g.width;
  const dim3 out_grid(static_cast<unsigned>((out_pixels + kWarpsPerBlock - 1) / kWarpsPerBlock),
                      chunks);
  const dim3 in_grid(static_cast<unsigned>((in_pixels + kWarpsPerBlock - 1) / kWarpsPerBlock),
                     chunks);
  const size_t shared = CudaPriorTileBytes(g.kernel_size, g.group_size);
  float* dot = workspace;
  float* partials = workspace + out_pixels * g.groups;
  const FixedOrderPriorBlocks blocks(g);
  WithComposability(g.composability, [&](auto composability) {
    constexpr int kComposability = decltype(composability)::value;
    if (fixed_order) {
      KERAS_RELNET_LAUNCH(dim3(static_cast<unsigned>(blocks.count), chunks), kWarp, shared,
                          stream, BackwardOutputFixedOrderKernel<T, kComposability>)(
          g, blocks.pixels_per_block, query, key, value, prior, output, lse, d_output, d_query,
          dot, partials);
      constexpr int kThreads = 256;
      KERAS_RELNET_LAUNCH(static_cast<unsigned>((prior_size + kThreads - 1) / kThreads),
                          kThreads, 0, stream, SumPriorPartials)(blocks.count, prior_size,
                                                                 partials, d_prior);
    } else {
      KERAS_RELNET_LAUNCH(out_grid, kWarp * kWarpsPerBlock, shared, stream,
                          BackwardOutputKernel<T, kComposability>)(
          g, query, key, value, prior, output, lse, d_output, d_query, dot, d_prior);
    }
    KERAS_RELNET_LAUNCH(in_grid, kWarp * kWarpsPerBlock, 0, stream,
                        BackwardInputKernel<T, kComposability>)(
        g, query, key, value, prior, lse, d_output, dot, d_key, d_value);
  });
  return static_cast<int>(cudaGetLastError());
}

// Calls fn(T{}) with the element type T of `type`.
template <typename Fn>
int WithStorageType(StorageType type, Fn&& fn) {
  switch (type) {
    case StorageType::kFloat16: return fn(__half{});
    case StorageType::kBFloat16: return fn(__nv_bfloat16{});
    default: return fn(float{});
  }
}

}  // namespace

int LaunchLocalRelationForward(const Geometry& g, StorageType type, const void* query,
                               const void* key, const void* value, const float* prior,
                               void* output, float* log_sum_exp, void* stream) {
  if (UnsupportedReason(KernelDevice::kCuda, type, g.kernel_size, g.group_size))
    return kLaunchUnsupported;
  return WithStorageType(type, [&](auto element) {
    using T = decltype(element);
    return Forward(g, static_cast<const T*>(query), static_cast<const T*>(key),
                   static_cast<const T*>(value), prior, static_cast<T*>(output), log_sum_exp,
                   static_cast<cudaStream_t>(stream));
  });
}

int LaunchLocalRelationBackward(const Geometry& g, StorageType type, const void* query,
                                const void* key, const void* value, const float* prior,
                                const void* output, const float* log_sum_exp,
                                const void* d_output, void* d_query, void* d_key, void* d_value,
                                float* d_prior, float* workspace, bool fixed_order,
                                void* stream) {
  if (UnsupportedReason(KernelDevice::kCuda, type, g.kernel_size, g.group_size))
    return kLaunchUnsupported;
  return WithStorageType(type, [&](auto element) {
    using T = decltype(element);
    return Backward(g, static_cast<const T*>(query), static_cast<const T*>(key),
                    static_cast<const T*>(value), prior, static_cast<const T*>(output),
                    log_sum_exp, static_cast<const T*>(d_output), static_cast<T*>(d_query),
                    static_cast<T*>(d_key), static_cast<T*>(d_value), d_prior, workspace,
                    fixed_order, static_cast<cudaStream_t>(stream));
  });
}

}  // namespace keras_relnet
