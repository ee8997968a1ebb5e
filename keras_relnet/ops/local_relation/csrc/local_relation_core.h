// The local relation math shared by the CPU kernels, the CUDA kernels and the
// standalone CUDA harness. No TensorFlow here: plain C++ (and CUDA) on raw
// NHWC pointers. The math: docs/local_relation.md; the Python reference is
// keras_relnet/ops/local_relation/reference.py.
//
// For output pixel (i, j), group g and window cell (u, v), r = k / 2:
//   cell pixel = (s*i + d*(u - r), s*j + d*(v - r))      (off-image cells skipped)
//   L = scale * Phi(q[i, j, g], key[cell, g]) + prior[g, u, v]
//   y[i, j, g*m + t] = sum_cells softmax(L) * value[cell, g*m + t]
// The forward pass also writes lse[i, j, g] = log sum_cells exp(L), so the
// backward pass recomputes the weights as exp(L - lse) without a k*k-sized
// tensor in memory. With D = sum_t dy * y (per pixel and group):
//   dL = w * (sum_t dy * value_cell - D)
#ifndef KERAS_RELNET_LOCAL_RELATION_CORE_H_
#define KERAS_RELNET_LOCAL_RELATION_CORE_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#if !defined(__CUDACC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

#if defined(__CUDACC__)
#define LR_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LR_HOST_DEVICE inline
#endif

namespace keras_relnet {

enum Composability : int {
  kSquaredDifference = 0,
  kDot = 1,
  kAbsDifference = 2,
};

// Sizes and options of one call.
struct Geometry {
  int64_t batch;
  int height, width;          // input
  int out_height, out_width;  // ceil(size / strides)
  int channels, groups, group_size;
  int kernel_size, radius, strides, dilation;
  int composability;
  float scale;

  LR_HOST_DEVICE int num_cells() const { return kernel_size * kernel_size; }
};

// Geometry from the sizes; the caller has validated them.
inline Geometry MakeGeometry(int64_t batch, int height, int width, int channels, int groups,
                             int kernel_size, int strides, int dilation, int composability,
                             float scale) {
  Geometry g;
  g.batch = batch;
  g.height = height;
  g.width = width;
  g.out_height = (height + strides - 1) / strides;
  g.out_width = (width + strides - 1) / strides;
  g.channels = channels;
  g.groups = groups;
  g.group_size = channels / groups;
  g.kernel_size = kernel_size;
  g.radius = kernel_size / 2;
  g.strides = strides;
  g.dilation = dilation;
  g.composability = composability;
  g.scale = scale;
  return g;
}

template <int kComposability>
LR_HOST_DEVICE float Compose(float q, float k) {
  if (kComposability == kSquaredDifference) return -(q - k) * (q - k);
  if (kComposability == kDot) return q * k;
  return -fabsf(q - k);
}

LR_HOST_DEVICE float Sign(float x) { return (x > 0.f) - (x < 0.f); }

// dPhi/dq; dPhi/dkey is its negative except for "dot" (where it is q).
template <int kComposability>
LR_HOST_DEVICE float ComposeQueryPartial(float q, float k) {
  if (kComposability == kSquaredDifference) return -2.f * (q - k);
  if (kComposability == kDot) return k;
  return -Sign(q - k);
}

template <int kComposability>
LR_HOST_DEVICE float ComposeKeyPartial(float q, float k) {
  if (kComposability == kDot) return q;
  return -ComposeQueryPartial<kComposability>(q, k);
}

// exp(r) for |r| <= ln(2) / 2 (Cephes' expf polynomial), on a float or on
// sixteen lanes.
template <typename F>
LR_HOST_DEVICE F ExpReduced(F r) {
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}

// exp(x) for x <= 0 (logits minus their maximum or their log-sum-exp), within
// 2 ulp: 2^n * exp(r) with x = n ln2 + r; written without calls so that
// compilers vectorise loops over it.
LR_HOST_DEVICE float ExpNonPositive(float x) {
  x = x < -87.0f ? -87.0f : x;  // a select, which vectorises (fmaxf is a libm call)
  const float n = floorf(x * 1.44269504088896341f + 0.5f);
  const float y = ExpReduced((x - n * 0.693359375f) + n * 2.12194440e-4f);
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
#if defined(__CUDA_ARCH__)
  return y * __int_as_float(bits);
#else
  return y * __builtin_bit_cast(float, bits);
#endif
}

#if !defined(__CUDACC__)
// Sixteen floats (one AVX-512 register, two AVX2 ones) and eight (one AVX
// register) as GCC/Clang vector types, for the loops whose accumulators must
// stay in registers.
typedef float Lanes __attribute__((vector_size(64)));
typedef int32_t IntLanes __attribute__((vector_size(64)));
constexpr int kLanes = 16;
typedef float Eight __attribute__((vector_size(32)));
typedef int32_t IntEight __attribute__((vector_size(32)));

inline Lanes LoadLanes(const float* p) {
  Lanes v;
  memcpy(&v, p, sizeof(v));
  return v;
}

inline void StoreLanes(float* p, Lanes v) { memcpy(p, &v, sizeof(v)); }

inline Eight LoadEight(const float* p) {
  Eight v;
  memcpy(&v, p, sizeof(v));
  return v;
}

inline void StoreEight(float* p, Eight v) { memcpy(p, &v, sizeof(v)); }

// ExpNonPositive on the lanes of V (same polynomial, same results; I: V's
// int32 vector). With AVX-512 the rounding and the 2^n scaling are one
// instruction each (vrndscaleps, vscalefps); else rounding by the 1.5 * 2^23
// trick (floorf has no vector form) and 2^n built from its bits.
template <typename V, typename I>
inline V ExpNonPositiveVector(V x) {
  x = x < -87.0f ? V{} - 87.0f : x;
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) {
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const V n = _mm512_roundscale_ps(x * 1.44269504088896341f, kNearest);
    return _mm512_scalef_ps(ExpReduced((x - n * 0.693359375f) + n * 2.12194440e-4f), n);
  }
#endif
#if defined(__AVX512VL__)
  if constexpr (sizeof(V) == 32) {
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    const V n = _mm256_roundscale_ps(x * 1.44269504088896341f, kNearest);
    return _mm256_scalef_ps(ExpReduced((x - n * 0.693359375f) + n * 2.12194440e-4f), n);
  }
#endif
  const V magic = V{} + 12582912.0f;
  const V n = (x * 1.44269504088896341f + magic) - magic;
  const V y = ExpReduced((x - n * 0.693359375f) + n * 2.12194440e-4f);
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  return y * reinterpret_cast<const V&>(bits);
}

inline Lanes ExpNonPositive(Lanes x) { return ExpNonPositiveVector<Lanes, IntLanes>(x); }
inline Eight ExpNonPositive(Eight x) { return ExpNonPositiveVector<Eight, IntEight>(x); }

// log(x) for positive normal x on the lanes of V (Cephes' logf polynomial):
// x = 2^e * f with f in [sqrt(1/2), sqrt(2)), log x = e ln 2 + log f.
template <typename V, typename I>
inline V LogPositiveVector(V x) {
  const I bits = reinterpret_cast<const I&>(x);
  I exponent = (bits >> 23) - 126;
  const I fraction_bits = (bits & 0x007fffff) | 0x3f000000;  // f / 2 in [0.5, 1)
  V f = reinterpret_cast<const V&>(fraction_bits);
  const I below = f < 0.707106781186547524f;  // -1 (all bits) where true
  exponent += below;
  f = (below ? f + f : f) - 1.0f;
  const V e = __builtin_convertvector(exponent, V);
  const V z = f * f;
  V p = V{} + 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  const V y = p * f * z + e * -2.12194440e-4f - 0.5f * z;
  return f + y + e * 0.693359375f;
}

inline Lanes LogPositive(Lanes x) { return LogPositiveVector<Lanes, IntLanes>(x); }
inline Eight LogPositive(Eight x) { return LogPositiveVector<Eight, IntEight>(x); }

// A vector of floats (Lanes or Eight) from or to memory.
template <typename V>
inline V LoadVector(const float* p) {
  V v;
  memcpy(&v, p, sizeof(v));
  return v;
}

template <typename V>
inline void StoreVector(float* p, V v) {
  memcpy(p, &v, sizeof(v));
}

// The first `count` floats at p (0 < count <= lanes of V), zero past them;
// never reads past them.
template <typename V>
inline V LoadFirstFloats(const float* p, int count) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) return _mm512_maskz_loadu_ps((1u << count) - 1u, p);
#endif
#if defined(__AVX512VL__)
  if constexpr (sizeof(V) == 32) return _mm256_maskz_loadu_ps((1u << count) - 1u, p);
#elif defined(__AVX__)
  if constexpr (sizeof(V) == 32) {
    const IntEight lanes = {0, 1, 2, 3, 4, 5, 6, 7};
    return _mm256_maskload_ps(p, reinterpret_cast<__m256i>(lanes < count));
  }
#endif
  V v = {};
  for (int lane = 0; lane < count; ++lane) v[lane] = p[lane];
  return v;
}
#endif

// Input row/column of window tap t for output row/column o; may be off-image.
LR_HOST_DEVICE int TapPosition(const Geometry& g, int o, int t) {
  return g.strides * o + g.dilation * (t - g.radius);
}

// Calls visit(u, v, y, x) for each window cell (u, v) of output pixel (i, j)
// whose input pixel (y, x) lies inside the image (off-image cells skipped).
template <typename Visit>
LR_HOST_DEVICE void ForEachWindowCell(const Geometry& g, int i, int j, Visit&& visit) {
  for (int u = 0; u < g.kernel_size; ++u) {
    const int y = TapPosition(g, i, u);
    if (y < 0 || y >= g.height) continue;
    for (int v = 0; v < g.kernel_size; ++v) {
      const int x = TapPosition(g, j, v);
      if (x < 0 || x >= g.width) continue;
      visit(u, v, y, x);
    }
  }
}

// Output row/column whose window tap t is input row/column p, or -1.
LR_HOST_DEVICE int OutputOfTap(const Geometry& g, int p, int t, int out_size) {
  const int numerator = p - g.dilation * (t - g.radius);
  if (numerator < 0 || numerator % g.strides) return -1;
  const int o = numerator / g.strides;
  return o < out_size ? o : -1;
}

// The reverse walk: calls visit(u, v, i, j) for each output pixel (i, j)
// whose window cell (u, v) is input pixel (y, x), the backward passes'
// gather over the outputs that read an input pixel.
template <typename Visit>
LR_HOST_DEVICE void ForEachWindowOwner(const Geometry& g, int y, int x, Visit&& visit) {
  for (int u = 0; u < g.kernel_size; ++u) {
    const int i = OutputOfTap(g, y, u, g.out_height);
    if (i < 0) continue;
    for (int v = 0; v < g.kernel_size; ++v) {
      const int j = OutputOfTap(g, x, v, g.out_width);
      if (j < 0) continue;
      visit(u, v, i, j);
    }
  }
}

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_CORE_H_
