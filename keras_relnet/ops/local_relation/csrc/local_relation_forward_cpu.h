// The CPU forward pass of the local relation op over ranges of output rows,
// on raw NHWC pointers (no TensorFlow).
//
// The value rows a range reads are first staged as float32 in "channel-major"
// order: for each input pixel, m rows of PaddedGroups floats, row t holding
// channel t of every group ([pixel][t][group] instead of NHWC's
// [pixel][group][t]). A vector then holds channel t of as many groups as it
// has lanes, exactly the lanes of a vector of softmax weights, so the
// aggregation is one load and one multiply-add per vector of multiply-adds, with
// no broadcast or permute of the weights. Each input row is staged once per
// range and read by up to k output rows.
//
// Per output pixel and block of groups, two passes over the window's
// in-image cells: the logits and their running maximum, then the exponentials,
// their sum and the weighted values together (the weights never leave
// registers when m <= 8). The sums are scaled by 1 / sum and written back in
// NHWC order.
#ifndef KERAS_RELNET_LOCAL_RELATION_FORWARD_CPU_H_
#define KERAS_RELNET_LOCAL_RELATION_FORWARD_CPU_H_

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "local_relation_cpu.h"
#include "local_relation_staging.h"

namespace keras_relnet {

// scale * Phi(q, k) + prior on the lanes of V.
template <int kComposability, typename V>
inline V LogitLanes(V q, V k, V prior, float scale) {
  if constexpr (kComposability == kSquaredDifference) {
    const V d = q - k;
    return prior - (scale * d) * d;
  } else if constexpr (kComposability == kDot) {
    return prior + scale * (q * k);
  } else {
    const V d = q - k;
    return prior - scale * (d < 0 ? -d : d);
  }
}

// The window taps [first, last) of output row/column o whose input row/column
// lies inside [0, size).
struct Taps {
  int first, last;
};

inline Taps InImageTaps(const Geometry& g, int o, int size) {
  int first = 0, last = g.kernel_size;
  while (first < last && TapPosition(g, o, first) < 0) ++first;
  while (last > first && TapPosition(g, o, last - 1) >= size) --last;
  return {first, last};
}

// The `valid` group lanes at p as the floats of a V, zero past them.
template <typename V, typename T>
inline V LoadGroups(const T* p, int valid) {
  constexpr int kWidth = sizeof(V) / sizeof(float);
  if constexpr (std::is_same<T, float>::value) {
    return valid == kWidth ? LoadVector<V>(p) : LoadFirstFloats<V>(p, valid);
  }
  V v = {};
  for (int lane = 0; lane < valid; ++lane) v[lane] = ToFloat(p[lane]);
  return v;
}

// One output pixel of the forward pass: its output row (NHWC) and its
// log-sum-exp row. `value_rows[u]` is the staged input row of window row u.
// With AVX-512, groups go in blocks of sixteen (one register) and a last
// block of at most eight in an eight-float vector: G = 8 (the stem) would
// waste half a sixteen-lane block, while eight-lane blocks throughout measured
// slower for G = 13 to 100, their per-cell work being done twice as often.
// Without AVX-512 every block is eight groups: sixteen-float sums would take
// two registers each and spill.
template <typename T, int kComposability, int kGroupSize>
struct PixelForward {
  const Geometry& g;
  const T* query;
  const T* key;
  const float* prior_by_cell;
  int padded;
  std::vector<float> logits;  // [cells, 16] of the current block
  std::vector<Lanes> sums;    // [m], for m > 8 or m unknown at compile time

  PixelForward(const Geometry& geometry, const T* q, const T* k, const float* prior)
      : g(geometry),
        query(q),
        key(k),
        prior_by_cell(prior),
        padded(PaddedGroups(geometry)),
        logits(static_cast<size_t>(geometry.num_cells()) * kLanes),
        sums(geometry.group_size) {}

  void Run(int64_t b, int i, int j, Taps rows, Taps cols, const float* const* value_rows,
           T* out, float* lse) {
    const int64_t pixel = (b * g.out_height + i) * g.out_width + j;
    int first = 0;
#if defined(__AVX512F__)
    for (; g.groups - first > kBlock; first += kLanes)
      Block<Lanes>(pixel, b, i, j, rows, cols, value_rows, first, out, lse);
#endif
    for (; first < g.groups; first += kBlock)
      Block<Eight>(pixel, b, i, j, rows, cols, value_rows, first, out, lse);
  }

 private:
  // The groups [first, first + lanes of V) (or up to G) of the pixel.
  template <typename V>
  void Block(int64_t pixel, int64_t b, int i, int j, Taps rows, Taps cols,
             const float* const* value_rows, int first, T* out, float* lse) {
    constexpr int kWidth = sizeof(V) / sizeof(float);
    const int m = kGroupSize ? kGroupSize : g.group_size;
    const int valid = std::min(kWidth, g.groups - first);
    const V q = LoadGroups<V>(query + pixel * g.groups + first, valid);
    // Pass 1: logits of the in-image cells and their maximum.
    const V high = LogitsAndMaximum(b, i, j, rows, cols, first, valid, q);
    // Pass 2: weights, their sum and the weighted values; m <= 8 sums stay
    // in registers, more would spill, so they live in `sums`.
    V total = {};
    V* sums_out;
    constexpr bool kInRegisters = kGroupSize > 0 && kGroupSize <= 8;
    V in_registers[kInRegisters ? kGroupSize : 1] = {};
    if constexpr (kInRegisters) {
      sums_out = in_registers;
    } else {
      sums_out = reinterpret_cast<V*>(sums.data());  // Lanes-aligned, at least V's
      std::fill(sums_out, sums_out + m, V{});
    }
    WeightedSums(j, rows, cols, value_rows, first, high, total, sums_out);
    alignas(64) float log_sum_exp[kWidth];
    StoreVector(log_sum_exp, high + LogPositive(total));
    std::copy(log_sum_exp, log_sum_exp + valid, lse + pixel * g.groups + first);
    WriteChannelMajor<T, kGroupSize>(sums_out, 1.0f / total, m, valid, out + first * m);
  }

  template <typename V>
  V LogitsAndMaximum(int64_t b, int i, int j, Taps rows, Taps cols, int first, int valid, V q) {
    constexpr int kWidth = sizeof(V) / sizeof(float);
    // Locals, not members: stores to `logits` could alias them.
    const int64_t groups = g.groups, key_step = g.dilation * groups;
    const int kernel_size = g.kernel_size, prior_rows = padded;
    const float scale = g.scale;
    const T* keys = key;
    const float* priors = prior_by_cell + first;
    float* out = logits.data();
    V high = V{} - 3.0e38f;
    int c = 0;
    for (int u = rows.first; u < rows.last; ++u) {
      const int64_t row_start = (b * g.height + TapPosition(g, i, u)) * g.width;
      int64_t key_at = (row_start + TapPosition(g, j, cols.first)) * groups + first;
      for (int v = cols.first; v < cols.last; ++v, ++c, key_at += key_step) {
        const V k = LoadGroups<V>(keys + key_at, valid);
        const V prior = LoadVector<V>(priors + (u * kernel_size + v) * prior_rows);
        const V logit = LogitLanes<kComposability>(q, k, prior, scale);
        StoreVector(out + c * kWidth, logit);
        high = high > logit ? high : logit;
      }
    }
    return high;
  }

  // total += weights; sums[t] += weights * channel t of the cells' values.
  template <typename V>
  void WeightedSums(int j, Taps rows, Taps cols, const float* const* value_rows, int first,
                    V high, V& total, V* __restrict__ sums_out) {
    constexpr int kWidth = sizeof(V) / sizeof(float);
    const int m = kGroupSize ? kGroupSize : g.group_size;
    const int64_t channel_rows = padded, staged = m * channel_rows;  // floats per staged pixel
    const int64_t cell_step = g.dilation * staged;
    const float* weights = logits.data();
    int c = 0;
    for (int u = rows.first; u < rows.last; ++u) {
      const float* cell = value_rows[u] + first + TapPosition(g, j, cols.first) * staged;
      for (int v = cols.first; v < cols.last; ++v, ++c, cell += cell_step) {
        const V weight = ExpNonPositive(LoadVector<V>(weights + c * kWidth) - high);
        total += weight;
        for (int t = 0; t < m; ++t) sums_out[t] += weight * LoadVector<V>(cell + t * channel_rows);
      }
    }
  }
};

// Forward: output [B, Ho, Wo, C] and lse [B, Ho, Wo, G] for the output rows
// [begin, end) of the flattened (b, i).
template <typename T, int kComposability, int kGroupSize>
void ForwardRows(const Geometry& g, const T* query, const T* key, const T* value,
                 const float* prior_by_cell, T* output, float* lse, int64_t begin, int64_t end) {
  StagedValueRows<T, kGroupSize> staging(g, value);
  PixelForward<T, kComposability, kGroupSize> forward(g, query, key, prior_by_cell);
  std::vector<Taps> column_taps(g.out_width);
  for (int j = 0; j < g.out_width; ++j) column_taps[j] = InImageTaps(g, j, g.width);
  std::vector<const float*> value_rows(g.kernel_size);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / g.out_height;
    const int i = static_cast<int>(row % g.out_height);
    const Taps rows = InImageTaps(g, i, g.height);
    staging.StageWindowRows(b, i, rows.first, rows.last, value_rows.data());
    for (int j = 0; j < g.out_width; ++j) {
      const int64_t pixel = row * g.out_width + j;
      forward.Run(b, i, j, rows, column_taps[j], value_rows.data(), output + pixel * g.channels,
                  lse);
    }
  }
}

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_FORWARD_CPU_H_
