// Channel-major staging of value rows for the CPU forward pass: NHWC's
// [pixel][group][t] rewritten as float32 [pixel][t][PaddedGroups] (padding
// lanes zero), and the way back for the output sums. For float32 with m = 8
// every eight groups are an 8 x 8 transpose in registers, three rounds of two-vector shuffles, each
// swapping one lane-index bit (a channel bit) with the same vector-index bit
// (a group bit). Other types and m go through scalar loops.
#ifndef KERAS_RELNET_LOCAL_RELATION_STAGING_H_
#define KERAS_RELNET_LOCAL_RELATION_STAGING_H_

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "local_relation_cpu.h"

namespace keras_relnet {

// Groups per 8 x 8 transpose.
constexpr int kBlock = 8;

// v[p] = eight channels of group p  <->  v[t] = channel t of eight groups
// (the transpose is its own inverse).
inline void TransposeEight(Eight* v) {
  const IntEight low[3] = {{0, 8, 2, 10, 4, 12, 6, 14}, {0, 1, 8, 9, 4, 5, 12, 13},
                           {0, 1, 2, 3, 8, 9, 10, 11}};
  const IntEight high[3] = {{1, 9, 3, 11, 5, 13, 7, 15}, {2, 3, 10, 11, 6, 7, 14, 15},
                            {4, 5, 6, 7, 12, 13, 14, 15}};
  for (int bit = 0; bit < 3; ++bit) {
    for (int first = 0; first < 8; ++first) {
      if ((first >> bit) & 1) continue;
      const Eight a = v[first], b = v[first | (1 << bit)];
      v[first] = __builtin_shuffle(a, b, low[bit]);
      v[first | (1 << bit)] = __builtin_shuffle(a, b, high[bit]);
    }
  }
}

// One NHWC pixel's `groups * m` values -> `m` rows of `padded` floats.
template <typename T, int kGroupSize>
inline void StagePixel(const T* __restrict__ pixel, int groups, int m, int padded,
                       float* __restrict__ staged) {
  if constexpr (std::is_same<T, float>::value && kGroupSize == 8) {
    for (int first = 0; first < groups; first += kBlock) {
      const int valid = std::min(kBlock, groups - first);
      Eight v[8];
      for (int p = 0; p < 8; ++p) v[p] = p < valid ? LoadEight(pixel + (first + p) * 8) : Eight{};
      TransposeEight(v);
      for (int t = 0; t < 8; ++t) StoreEight(staged + t * padded + first, v[t]);
    }
    return;
  }
  if (kGroupSize) m = kGroupSize;
  for (int group = 0; group < groups; ++group)
    for (int t = 0; t < m; ++t) staged[t * padded + group] = ToFloat(pixel[group * m + t]);
}

// out[g*m + t] = sums[t][g] * inverse[g] for the `valid` groups of one block
// (sums: m vectors V of Lanes or Eight, channel t of each group).
template <typename T, int kGroupSize, typename V>
inline void WriteChannelMajor(const V* sums, V inverse, int m, int valid, T* __restrict__ out) {
  if constexpr (std::is_same<T, float>::value && kGroupSize == 8) {
    for (int half = 0; half * kBlock < valid; ++half) {  // eight groups at a time
      Eight v[8];
      for (int t = 0; t < 8; ++t) {
        const V scaled = sums[t] * inverse;
        memcpy(&v[t], reinterpret_cast<const float*>(&scaled) + half * kBlock, sizeof(Eight));
      }
      TransposeEight(v);
      const int groups = std::min(kBlock, valid - half * kBlock);
      for (int p = 0; p < groups; ++p) StoreEight(out + (half * kBlock + p) * 8, v[p]);
    }
    return;
  }
  if (kGroupSize) m = kGroupSize;
  for (int group = 0; group < valid; ++group)
    for (int t = 0; t < m; ++t) out[group * m + t] = static_cast<T>(sums[t][group] * inverse[group]);
}

// Staged input rows of one thread's range of output rows: k slots of a whole
// row each ([W][m][PaddedGroups] floats), refilled only with the rows the
// current output row needs and no slot holds.
template <typename T, int kGroupSize>
class StagedValueRows {
 public:
  StagedValueRows(const Geometry& g, const T* value)
      : g_(g),
        value_(value),
        m_(g.group_size),
        padded_(PaddedGroups(g)),
        row_floats_(static_cast<int64_t>(g.width) * g.group_size * PaddedGroups(g)),
        slots_(static_cast<size_t>(g.kernel_size) * row_floats_, 0.f),
        tags_(g.kernel_size, -1) {}

  // rows[u] = the staged input row of window row u of output row (b, i), for
  // the in-image window rows u in [first, last).
  void StageWindowRows(int64_t b, int i, int first, int last, const float** rows) {
    std::vector<bool>& needed = needed_;
    needed.assign(g_.kernel_size, false);
    for (int u = first; u < last; ++u) {
      const int64_t tag = b * g_.height + TapPosition(g_, i, u);
      for (int slot = 0; slot < g_.kernel_size; ++slot)
        if (tags_[slot] == tag) needed[slot] = true;
    }
    for (int u = first; u < last; ++u) {
      const int64_t tag = b * g_.height + TapPosition(g_, i, u);
      int slot = 0;
      while (slot < g_.kernel_size && tags_[slot] != tag) ++slot;
      if (slot == g_.kernel_size) {  // not staged: take a slot this row does not need
        slot = 0;
        while (needed[slot]) ++slot;
        Fill(slot, tag);
        needed[slot] = true;
      }
      rows[u] = slots_.data() + slot * row_floats_;
    }
  }

 private:
  void Fill(int slot, int64_t tag) {
    tags_[slot] = tag;
    float* row = slots_.data() + slot * row_floats_;
    const T* source = value_ + tag * g_.width * g_.channels;
    for (int x = 0; x < g_.width; ++x)
      StagePixel<T, kGroupSize>(source + static_cast<int64_t>(x) * g_.channels, g_.groups, m_,
                                padded_, row + x * m_ * padded_);
  }

  const Geometry& g_;
  const T* value_;
  int m_, padded_;
  int64_t row_floats_;
  std::vector<float> slots_;
  std::vector<int64_t> tags_;
  std::vector<bool> needed_;
};

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_STAGING_H_
