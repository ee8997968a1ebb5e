// CPU backward passes of the local relation op over ranges of rows, and the
// helpers the forward pass (local_relation_forward_cpu.h) shares, on raw NHWC
// pointers (no TensorFlow: the op wraps them in its thread pool, and the CUDA
// harness uses them as its reference).
//
// Every backward pass works on one pixel at a time with per-thread scratch of
// k*k*G + O(C) floats, loops over all groups at once (contiguous in NHWC) and
// over the m channels of a group with m a compile-time constant for
// m in {1, 2, 4, 8, 16, 32}, so the inner loops vectorise. Arithmetic is
// float32 whatever T (float, Eigen::half, Eigen::bfloat16).
#ifndef KERAS_RELNET_LOCAL_RELATION_CPU_H_
#define KERAS_RELNET_LOCAL_RELATION_CPU_H_

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "local_relation_core.h"

namespace keras_relnet {

template <typename T>
inline float ToFloat(T x) {
  return static_cast<float>(x);
}

// Calls fn(composability, m) with both as std::integral_constant; m = 0 means
// "read g.group_size at run time".
template <typename Fn>
void WithConstants(const Geometry& g, Fn&& fn) {
  auto with_group_size = [&](auto composability) {
    switch (g.group_size) {
      case 1: return fn(composability, std::integral_constant<int, 1>());
      case 2: return fn(composability, std::integral_constant<int, 2>());
      case 4: return fn(composability, std::integral_constant<int, 4>());
      case 8: return fn(composability, std::integral_constant<int, 8>());
      case 16: return fn(composability, std::integral_constant<int, 16>());
      case 32: return fn(composability, std::integral_constant<int, 32>());
      default: return fn(composability, std::integral_constant<int, 0>());
    }
  };
  switch (g.composability) {
    case kDot: return with_group_size(std::integral_constant<int, kDot>());
    case kAbsDifference: return with_group_size(std::integral_constant<int, kAbsDifference>());
    default: return with_group_size(std::integral_constant<int, kSquaredDifference>());
  }
}

// Per-group scratch rows are padded to a multiple of the widest vector (16
// floats), so loops over groups run whole vectors and no scalar remainder
// (G = 13 or 25 would otherwise spend most of their time in one); padding
// lanes hold zeros and finite junk that is never written out.
inline int PaddedGroups(const Geometry& g) { return (g.groups + kLanes - 1) / kLanes * kLanes; }

// The prior [G, k*k] transposed to [k*k, PaddedGroups]: a zero-padded row per cell.
inline std::vector<float> PriorByCell(const Geometry& g, const float* prior) {
  const int stride = PaddedGroups(g);
  std::vector<float> by_cell(static_cast<size_t>(g.num_cells()) * stride, 0.f);
  for (int group = 0; group < g.groups; ++group)
    for (int cell = 0; cell < g.num_cells(); ++cell)
      by_cell[cell * stride + group] = prior[group * g.num_cells() + cell];
  return by_cell;
}

// Per-thread buffers of one pass.
struct Scratch {
  std::vector<int> cells;       // valid window cells of the pixel
  std::vector<int64_t> pixels;  // their flat input pixel index (b, y, x)
  int padded;                   // PaddedGroups
  int64_t key_elements;         // of the key tensor, B * H * W * G
  std::vector<float> query, total;  // [padded]
  std::vector<float> key, weight, d_logit, partial, ones, lse, dot;  // [padded]
  std::vector<float> channels_b;                     // [C]

  explicit Scratch(const Geometry& g)
      : cells(g.num_cells()),
        pixels(g.num_cells()),
        padded(PaddedGroups(g)),
        key_elements(g.batch * g.height * g.width * g.groups),
        query(padded, 0.f),
        total(padded, 0.f),
        key(padded, 0.f),
        weight(padded, 0.f),
        d_logit(padded, 0.f),
        partial(padded, 0.f),
        ones(padded, 1.f),
        lse(padded, 0.f),
        dot(padded, 0.f),
        channels_b(g.channels) {}
};

// sums[g*m + 8p .. +8) += w * value[same] for the sixteen groups from `first`
// with w = weights[g] * scale[g] (m = 8): two groups per vector, their
// weights spread from one vector of sixteen by a permute.
inline void AddWeightedValuesOf16(int groups, int first, const float* __restrict__ weights,
                                  const float* __restrict__ scale, const float* __restrict__ value,
                                  float* __restrict__ sums) {
  const Lanes weight = LoadLanes(weights + first) * LoadLanes(scale + first);
  const IntLanes spread = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
  for (int pair = 0; pair < 8; ++pair) {
    const int group = first + 2 * pair;
    if (group + 2 <= groups) {
      const Lanes sum = LoadLanes(sums + group * 8) +
                        __builtin_shuffle(weight, spread + 2 * pair) * LoadLanes(value + group * 8);
      StoreLanes(sums + group * 8, sum);
    } else if (group + 1 == groups) {
      Eight sum, cell_value;
      memcpy(&sum, sums + group * 8, sizeof(Eight));
      memcpy(&cell_value, value + group * 8, sizeof(Eight));
      sum += weight[2 * pair] * cell_value;
      memcpy(sums + group * 8, &sum, sizeof(Eight));
    }
  }
}

// sums[g*m + t] += weights[g] * scale[g] * value[g*m + t] (one cell, all
// groups); weights and scale hold PaddedGroups floats.
template <typename T, int kGroupSize>
inline void AddWeightedValues(int groups, int m, const float* __restrict__ weights,
                              const float* __restrict__ scale, const T* __restrict__ value,
                              float* __restrict__ sums) {
  if (kGroupSize) m = kGroupSize;
  if constexpr (std::is_same<T, float>::value && kGroupSize == 8) {
    for (int first = 0; first < groups; first += kLanes)
      AddWeightedValuesOf16(groups, first, weights, scale, value, sums);
    return;
  }
  if constexpr (std::is_same<T, float>::value && kGroupSize % 8 == 0 && kGroupSize > 0) {
    // Eight-float vectors written out: left alone, GCC vectorises across
    // groups with permutes, several times slower.
    for (int group = 0; group < groups; ++group) {
      const float weight = weights[group] * scale[group];
      for (int t = 0; t < kGroupSize; t += 8) {
        Eight cell_value, sum;
        memcpy(&cell_value, value + group * kGroupSize + t, sizeof(Eight));
        memcpy(&sum, sums + group * kGroupSize + t, sizeof(Eight));
        sum += weight * cell_value;
        memcpy(sums + group * kGroupSize + t, &sum, sizeof(Eight));
      }
    }
    return;
  }
  for (int group = 0; group < groups; ++group) {
    const float weight = weights[group] * scale[group];
    for (int t = 0; t < m; ++t) sums[group * m + t] += weight * ToFloat(value[group * m + t]);
  }
}

// The dot products a[g*8 .. g*8+8) . b[g*8 .. g*8+8) of the sixteen groups
// from `first` (zero past `groups`; needs groups >= 2), as one vector in group
// order: eight vectors of two groups' products, summed pairwise in three
// rounds of two-vector shuffles (each round halves the lanes per group and
// doubles the groups per vector), which leaves the groups in bit-reversed order.
inline Lanes GroupDotsOf16(int groups, int first, const float* __restrict__ a,
                           const float* __restrict__ b) {
  const IntLanes upper_half = {8, 9, 10, 11, 12, 13, 14, 15, 16, 16, 16, 16, 16, 16, 16, 16};
  Lanes products[8];
  for (int pair = 0; pair < 8; ++pair) {
    const int group = first + 2 * pair;
    if (group + 2 <= groups) {
      products[pair] = LoadLanes(a + group * 8) * LoadLanes(b + group * 8);
    } else if (group + 1 == groups) {
      // The odd last group: loaded with its predecessor (never past the row).
      const Lanes both = LoadLanes(a + (group - 1) * 8) * LoadLanes(b + (group - 1) * 8);
      products[pair] = __builtin_shuffle(both, Lanes{}, upper_half);
    } else {
      products[pair] = Lanes{};
    }
  }
  const IntLanes low4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27};
  const IntLanes low2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29};
  const IntLanes low1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30};
  const IntLanes bit_reversed = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  auto fold = [](Lanes x, Lanes y, IntLanes low, int half) {
    return __builtin_shuffle(x, y, low) + __builtin_shuffle(x, y, low + half);
  };
  Lanes quads[4], pairs[2];
  for (int i = 0; i < 4; ++i) quads[i] = fold(products[2 * i], products[2 * i + 1], low4, 4);
  for (int i = 0; i < 2; ++i) pairs[i] = fold(quads[2 * i], quads[2 * i + 1], low2, 2);
  return __builtin_shuffle(fold(pairs[0], pairs[1], low1, 1), bit_reversed);
}

// out[g] = sum_t a[g*m + t] * b[g*m + t] (per-group dot products); `out` holds
// PaddedGroups floats (the padding lanes may be overwritten).
template <typename A, typename B, int kGroupSize>
inline void GroupDots(int groups, int m, const A* __restrict__ a, const B* __restrict__ b,
                      float* __restrict__ out) {
  if (kGroupSize) m = kGroupSize;
  if constexpr (std::is_same<A, float>::value && std::is_same<B, float>::value &&
                kGroupSize == 8) {
    if (groups >= 2) {
      for (int first = 0; first < groups; first += kLanes)
        StoreLanes(out + first, GroupDotsOf16(groups, first, a, b));
      return;
    }
  }
  if constexpr (std::is_same<A, float>::value && std::is_same<B, float>::value &&
                kGroupSize % 8 == 0 && kGroupSize > 0) {
    for (int group = 0; group < groups; ++group) {
      Eight sum = {};
      for (int t = 0; t < kGroupSize; t += 8) {
        Eight x, y;
        memcpy(&x, a + group * kGroupSize + t, sizeof(Eight));
        memcpy(&y, b + group * kGroupSize + t, sizeof(Eight));
        sum += x * y;
      }
      out[group] = ((sum[0] + sum[4]) + (sum[1] + sum[5])) + ((sum[2] + sum[6]) + (sum[3] + sum[7]));
    }
    return;
  }
  for (int group = 0; group < groups; ++group) {
    float sum = 0.f;
    for (int t = 0; t < m; ++t) sum += ToFloat(a[group * m + t]) * ToFloat(b[group * m + t]);
    out[group] = sum;
  }
}

// For one (output pixel, cell) pair and all groups: the softmax weight
// w = exp(L - lse) and the logit gradient dL = w * (d_weight - dot); returns
// both in place (weight, d_logit) and dPhi/dq or dPhi/dkey in `partial`.
template <int kComposability, bool kKeyPartial>
inline void WeightsAndLogitGradients(int groups, float scale, const float* __restrict__ query,
                                     const float* __restrict__ key,
                                     const float* __restrict__ prior,
                                     const float* __restrict__ lse, const float* __restrict__ dot,
                                     float* __restrict__ weight, float* __restrict__ d_logit,
                                     float* __restrict__ partial) {
  for (int group = 0; group < groups; ++group) {
    const float q = query[group], k = key[group];
    const float w = ExpNonPositive(scale * Compose<kComposability>(q, k) + prior[group] - lse[group]);
    weight[group] = w;
    d_logit[group] = w * (d_logit[group] - dot[group]);  // d_logit holds d_weight on entry
    partial[group] = scale * (kKeyPartial ? ComposeKeyPartial<kComposability>(q, k)
                                          : ComposeQueryPartial<kComposability>(q, k));
  }
}

// For one (output pixel, cell) pair and all groups, the whole backward step of
// the single-pass backward: weight w, dL = w * (d_weight - dot), and their
// contributions to d_query, d_prior and the cell pixel's d_key.
template <int kComposability>
inline void CellGradients(int groups, float scale, const float* __restrict__ query,
                          const float* __restrict__ key, const float* __restrict__ prior,
                          const float* __restrict__ lse, const float* __restrict__ dot,
                          const float* __restrict__ d_weight, float* __restrict__ weight,
                          float* __restrict__ d_query, float* __restrict__ d_prior,
                          float* __restrict__ d_key) {
  for (int group = 0; group < groups; ++group) {
    const float q = query[group], k = key[group];
    const float w = ExpNonPositive(scale * Compose<kComposability>(q, k) + prior[group] - lse[group]);
    const float d_logit = w * (d_weight[group] - dot[group]);
    weight[group] = w;
    d_query[group] += scale * d_logit * ComposeQueryPartial<kComposability>(q, k);
    d_prior[group] += d_logit;
    d_key[group] += scale * d_logit * ComposeKeyPartial<kComposability>(q, k);
  }
}

// total[g] += a[g] * b[g]
inline void AddProducts(int groups, const float* __restrict__ a, const float* __restrict__ b,
                        float* __restrict__ total) {
  for (int group = 0; group < groups; ++group) total[group] += a[group] * b[group];
}

// The in-image window cells of output pixel (b, i, j); returns their count.
inline int ValidCells(const Geometry& g, int64_t b, int i, int j, Scratch& s) {
  int count = 0;
  ForEachWindowCell(g, i, j, [&](int u, int v, int y, int x) {
    s.cells[count] = u * g.kernel_size + v;
    s.pixels[count] = (b * g.height + y) * g.width + x;
    ++count;
  });
  return count;
}

// Calls visit(pixel, count) for each output pixel of the flattened output rows
// [begin, end) of (b, i), with its `count` in-image window cells in s.cells and
// s.pixels (count >= 1: the centre is in the image).
template <typename Visit>
inline void ForEachOutputPixel(const Geometry& g, int64_t begin, int64_t end, Scratch& s,
                               Visit&& visit) {
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / g.out_height;
    const int i = static_cast<int>(row % g.out_height);
    for (int j = 0; j < g.out_width; ++j) visit(row * g.out_width + j, ValidCells(g, b, i, j, s));
  }
}

// What both backward passes over output pixels need first for `pixel`:
// s.dot = sum_t dy * y per group, s.query and s.lse, and d_q (s.total) zeroed.
template <typename T, int kGroupSize>
inline void StartOutputPixel(const Geometry& g, int64_t pixel, const T* query, const T* output,
                             const float* lse, const T* d_out, Scratch& s) {
  const int groups = g.groups;
  GroupDots<T, T, kGroupSize>(groups, g.group_size, d_out, output + pixel * g.channels,
                              s.dot.data());
  std::fill(s.total.begin(), s.total.end(), 0.f);
  for (int group = 0; group < groups; ++group) {
    s.query[group] = ToFloat(query[pixel * groups + group]);
    s.lse[group] = lse[pixel * groups + group];
  }
}

// The keys of input pixel `at` as s.padded floats. float32 is read in place
// while that read stays inside the tensor (lanes past the groups then hold the
// next pixels' keys: junk that no lane of a real group reads, never written
// out); copying the row into scratch first costs a store-to-load forwarding
// stall per cell (scalar stores, one wide load). Else converted into s.key.
template <typename T>
inline const float* KeyRow(const Geometry& g, const T* key, int64_t at, Scratch& s) {
  if constexpr (std::is_same<T, float>::value) {
    if (at * g.groups + s.padded <= s.key_elements) return key + at * g.groups;
  }
  for (int group = 0; group < g.groups; ++group) s.key[group] = ToFloat(key[at * g.groups + group]);
  return s.key.data();
}

// Backward, output side, for the output rows [begin, end): d_query,
// dot = sum_t dy * y per (pixel, group) (used by the input side), and the
// prior gradient added into d_prior_by_cell [k*k, PaddedGroups] (this range's share).
template <typename T, int kComposability, int kGroupSize>
void BackwardOutputRows(const Geometry& g, const T* query, const T* key, const T* value,
                        const float* prior_by_cell, const T* output, const float* lse,
                        const T* d_output, T* d_query, float* dot, float* d_prior_by_cell,
                        int64_t begin, int64_t end) {
  Scratch s(g);
  const int groups = g.groups, channels = g.channels;
  const int m = kGroupSize ? kGroupSize : g.group_size;
  float* d_q = s.total.data();
  ForEachOutputPixel(g, begin, end, s, [&](int64_t pixel, int count) {
    const T* d_out = d_output + pixel * channels;
    const int padded = s.padded;
    StartOutputPixel<T, kGroupSize>(g, pixel, query, output, lse, d_out, s);
    std::copy(s.dot.begin(), s.dot.begin() + groups, dot + pixel * groups);
    for (int c = 0; c < count; ++c) {
      GroupDots<T, T, kGroupSize>(groups, m, d_out, value + s.pixels[c] * channels,
                                  s.d_logit.data());
      WeightsAndLogitGradients<kComposability, false>(
          padded, g.scale, s.query.data(), KeyRow(g, key, s.pixels[c], s),
          prior_by_cell + s.cells[c] * padded, s.lse.data(), s.dot.data(), s.weight.data(),
          s.d_logit.data(), s.partial.data());
      AddProducts(padded, s.d_logit.data(), s.partial.data(), d_q);
      AddProducts(padded, s.d_logit.data(), s.ones.data(), d_prior_by_cell + s.cells[c] * padded);
    }
    for (int group = 0; group < groups; ++group)
      d_query[pixel * groups + group] = static_cast<T>(d_q[group]);
  });
}

// Backward in one pass over the output pixels of the images [begin, end):
// d_query, the prior gradient (added into d_prior_by_cell [k*k, PaddedGroups])
// and d_key/d_value scattered into the float accumulators d_key_sum
// [B, H, W, PaddedGroups] and d_value_sum [B, H, W, C] (zeroed by the caller). A window
// never leaves its image, so images run in parallel without races; used when
// there are at least as many images as threads (else the two passes below).
template <typename T, int kComposability, int kGroupSize>
void BackwardImages(const Geometry& g, const T* query, const T* key, const T* value,
                    const float* prior_by_cell, const T* output, const float* lse,
                    const T* d_output, T* d_query, float* d_prior_by_cell, float* d_key_sum,
                    float* d_value_sum, int64_t begin, int64_t end) {
  Scratch s(g);
  const int groups = g.groups, channels = g.channels, padded = s.padded;
  const int m = kGroupSize ? kGroupSize : g.group_size;
  float* d_q = s.total.data();
  const int64_t rows = g.out_height;
  ForEachOutputPixel(g, begin * rows, end * rows, s, [&](int64_t pixel, int count) {
    const T* d_out = d_output + pixel * channels;
    StartOutputPixel<T, kGroupSize>(g, pixel, query, output, lse, d_out, s);
    for (int c = 0; c < count; ++c) {
      const int64_t at = s.pixels[c];
      GroupDots<T, T, kGroupSize>(groups, m, d_out, value + at * channels, s.d_logit.data());
      CellGradients<kComposability>(padded, g.scale, s.query.data(), KeyRow(g, key, at, s),
                                    prior_by_cell + s.cells[c] * padded, s.lse.data(),
                                    s.dot.data(), s.d_logit.data(), s.weight.data(), d_q,
                                    d_prior_by_cell + s.cells[c] * padded,
                                    d_key_sum + at * padded);
      AddWeightedValues<T, kGroupSize>(groups, m, s.weight.data(), s.ones.data(), d_out,
                                       d_value_sum + at * channels);
    }
    for (int group = 0; group < groups; ++group)
      d_query[pixel * groups + group] = static_cast<T>(d_q[group]);
  });
}

// Backward, input side, for the input rows [begin, end) of the flattened
// (b, y): d_key and d_value, gathered from the output pixels whose windows
// hold each input pixel (no scatter, so rows run in parallel without races).
template <typename T, int kComposability, int kGroupSize>
void BackwardInputRows(const Geometry& g, const T* query, const T* key, const T* value,
                       const float* prior_by_cell, const float* lse, const T* d_output,
                       const float* dot, T* d_key, T* d_value, int64_t begin, int64_t end) {
  Scratch s(g);
  const int groups = g.groups, channels = g.channels;
  const int m = kGroupSize ? kGroupSize : g.group_size;
  float* d_k = s.total.data();
  float* d_v = s.channels_b.data();
  const int padded = s.padded;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / g.height;
    const int y = static_cast<int>(row % g.height);
    for (int x = 0; x < g.width; ++x) {
      const int64_t pixel = row * g.width + x;
      const T* pixel_value = value + pixel * channels;
      for (int group = 0; group < groups; ++group) s.key[group] = ToFloat(key[pixel * groups + group]);
      std::fill(d_k, d_k + padded, 0.f);
      std::fill(d_v, d_v + channels, 0.f);
      ForEachWindowOwner(g, y, x, [&](int u, int v, int i, int j) {
        const int64_t out = (b * g.out_height + i) * g.out_width + j;
        // Unpadded here: query (when float), lse and dot are read in place
        // (copying them into padded rows per output pixel measured slower).
        const float* out_query = s.query.data();
        if constexpr (std::is_same<T, float>::value) {
          out_query = query + out * groups;
        } else {
          for (int group = 0; group < groups; ++group)
            s.query[group] = ToFloat(query[out * groups + group]);
        }
        const T* dy_row = d_output + out * channels;
        GroupDots<T, T, kGroupSize>(groups, m, dy_row, pixel_value, s.d_logit.data());
        WeightsAndLogitGradients<kComposability, true>(
            groups, g.scale, out_query, s.key.data(),
            prior_by_cell + (u * g.kernel_size + v) * padded, lse + out * groups,
            dot + out * groups, s.weight.data(), s.d_logit.data(), s.partial.data());
        AddProducts(groups, s.d_logit.data(), s.partial.data(), d_k);
        AddWeightedValues<T, kGroupSize>(groups, m, s.weight.data(), s.ones.data(), dy_row, d_v);
      });
      for (int group = 0; group < groups; ++group) d_key[pixel * groups + group] = static_cast<T>(d_k[group]);
      for (int c = 0; c < channels; ++c) d_value[pixel * channels + c] = static_cast<T>(d_v[c]);
    }
  }
}

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_CPU_H_
