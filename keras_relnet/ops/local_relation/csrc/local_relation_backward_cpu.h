// The CPU backward pass of the local relation op for one image at a time, in
// channel-major order (no TensorFlow; local_relation_grad_cpu.cc runs it when
// there are at least as many images as threads).
//
// The input rows a window reads are staged as float32 [pixel][t][group], as the
// forward stages its rows (local_relation_staging.h), in slots of one row each,
// one per row a window spans, and d_value and d_key are summed in the same
// slots; so are each output pixel's d_output and output rows. A slot's sums go
// out (d_value back to NHWC) when its row leaves the window, so what is
// touched stays in cache. A
// vector then holds channel t of as many groups as it has lanes, the lanes of
// the weights: the per-cell dot product d_weight = sum_t dy * value and the
// update d_value += w * dy are m multiply-adds of whole vectors each, with no
// shuffle. Per output pixel and block of groups, one walk over the in-image
// window cells recomputes the weight w = exp(L - lse) and adds
//   dL = w * (d_weight - sum_t dy * y)
// into d_query, d_prior and the cell's d_key.
#ifndef KERAS_RELNET_LOCAL_RELATION_BACKWARD_CPU_H_
#define KERAS_RELNET_LOCAL_RELATION_BACKWARD_CPU_H_

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "local_relation_cpu.h"
#include "local_relation_forward_cpu.h"
#include "local_relation_staging.h"

namespace keras_relnet {

// dPhi/dq (kKey false) or dPhi/dkey (kKey true) on the lanes of V.
template <int kComposability, bool kKey, typename V>
inline V PartialLanes(V q, V k) {
  if constexpr (kComposability == kDot) return kKey ? q : k;
  const V d = q - k;
  if constexpr (kComposability == kSquaredDifference) return kKey ? d + d : -(d + d);
  const V one = V{} + 1.0f, sign = d > 0 ? one : (d < 0 ? -one : V{});
  return kKey ? sign : -sign;
}

// Whether the channel-major backward handles this m (a compile-time m the
// sums of a block can be held for).
template <int kGroupSize>
constexpr bool kChannelMajorBackward = kGroupSize > 0 && kGroupSize <= 32;

// Floats per channel row of the channel-major buffers: G rounded up to a
// multiple of eight, which every block of groups fits in (a sixteen-lane block
// starts only where more than eight groups are left). Rounding to sixteen, as
// PaddedGroups does, would double the buffers of G = 8 (the stem).
inline int ChannelRow(const Geometry& g) { return (g.groups + kBlock - 1) / kBlock * kBlock; }

// Input rows a window can span: d * (k - 1) + 1.
inline int WindowSpan(const Geometry& g) { return g.dilation * (g.kernel_size - 1) + 1; }

// Per-thread buffers, reused image after image: one slot per input row of a
// window's span (input row y lives in slot y % span, so the rows of the
// current window never share one), each with the row's staged values and its
// d_value and d_key sums, and one output pixel's d_output and output rows.
struct BackwardRowSlots {
  int64_t slot_pixels_floats;           // W * m * ChannelRow
  std::vector<float> values, d_values;  // [span][W][m][ChannelRow]
  std::vector<float> d_keys;            // [span][W][ChannelRow]
  std::vector<int> tags;                // the input row in each slot, or -1
  std::vector<char> written;            // [H]: whether row y's gradients are out
  std::vector<float> d_output, output;  // [m][ChannelRow]

  explicit BackwardRowSlots(const Geometry& g)
      : slot_pixels_floats(static_cast<int64_t>(g.width) * g.group_size * ChannelRow(g)),
        values(static_cast<size_t>(WindowSpan(g)) * slot_pixels_floats, 0.f),
        d_values(values.size(), 0.f),
        d_keys(static_cast<size_t>(WindowSpan(g)) * g.width * ChannelRow(g), 0.f),
        tags(WindowSpan(g), -1),
        written(g.height, 0),
        d_output(static_cast<size_t>(g.group_size) * ChannelRow(g), 0.f),
        output(d_output.size(), 0.f) {}
};

template <typename T, int kComposability, int kGroupSize>
class ImageBackward {
 public:
  struct Inputs {
    const T *query, *key, *value;
    const float* prior_by_cell;  // [k*k][padded]
    const T* output;
    const float* lse;
    const T* d_output;
  };
  struct Outputs {
    T *d_query, *d_key, *d_value;
    float* d_prior_by_cell;  // [k*k][padded], this image's share, zeroed by the caller
  };

  ImageBackward(const Geometry& g, const Inputs& in, const Outputs& out, BackwardRowSlots& slots)
      : g_(g),
        in_(in),
        out_(out),
        s_(slots),
        row_(ChannelRow(g)),
        padded_(PaddedGroups(g)),
        span_(WindowSpan(g)),
        slot_of_tap_(g.kernel_size, 0) {}

  void Run(int64_t image) {
    std::fill(s_.tags.begin(), s_.tags.end(), -1);
    std::fill(s_.written.begin(), s_.written.end(), 0);
    for (int i = 0; i < g_.out_height; ++i) {
      const Taps rows = InImageTaps(g_, i, g_.height);
      for (int u = rows.first; u < rows.last; ++u) slot_of_tap_[u] = Slot(image, TapPosition(g_, i, u));
      for (int j = 0; j < g_.out_width; ++j) {
        const int64_t pixel = (image * g_.out_height + i) * g_.out_width + j;
        StagePixel<T, kGroupSize>(in_.d_output + pixel * g_.channels, g_.groups, kGroupSize,
                                  row_, s_.d_output.data());
        StagePixel<T, kGroupSize>(in_.output + pixel * g_.channels, g_.groups, kGroupSize,
                                  row_, s_.output.data());
        const Taps cols = InImageTaps(g_, j, g_.width);
        int first = 0;
#if defined(__AVX512F__)
        for (; g_.groups - first > kBlock; first += kLanes)
          Block<Lanes>(image, pixel, i, j, rows, cols, first);
#endif
        for (; first < g_.groups; first += kBlock)
          Block<Eight>(image, pixel, i, j, rows, cols, first);
      }
    }
    for (int slot = 0; slot < span_; ++slot)
      if (s_.tags[slot] >= 0) WriteRow(image, slot);
    ZeroUnreadRows(image);
  }

 private:
  // The slot of input row y, staged (and its sums zeroed) if it is not there
  // yet; the row it held before is finished (it lies above every later window).
  int Slot(int64_t image, int y) {
    const int slot = y % span_;
    if (s_.tags[slot] == y) return slot;
    if (s_.tags[slot] >= 0) WriteRow(image, slot);
    s_.tags[slot] = y;
    const int64_t staged = static_cast<int64_t>(kGroupSize) * row_;  // floats per pixel
    float* values = s_.values.data() + slot * s_.slot_pixels_floats;
    const T* source = in_.value + (image * g_.height + y) * g_.width * g_.channels;
    for (int x = 0; x < g_.width; ++x)
      StagePixel<T, kGroupSize>(source + static_cast<int64_t>(x) * g_.channels, g_.groups,
                                kGroupSize, row_, values + x * staged);
    std::fill_n(s_.d_values.data() + slot * s_.slot_pixels_floats, s_.slot_pixels_floats, 0.f);
    std::fill_n(s_.d_keys.data() + static_cast<int64_t>(slot) * g_.width * row_,
                static_cast<int64_t>(g_.width) * row_, 0.f);
    return slot;
  }

  // The groups [first, first + lanes of V) (or up to G) of output pixel (i, j).
  template <typename V>
  void Block(int64_t image, int64_t pixel, int i, int j, Taps rows, Taps cols, int first) {
    constexpr int m = kGroupSize;
    constexpr int kWidth = sizeof(V) / sizeof(float);
    const int valid = std::min(kWidth, g_.groups - first);
    const int64_t groups = g_.groups, row = row_, staged = static_cast<int64_t>(m) * row;
    const V q = LoadGroups<V>(in_.query + pixel * groups + first, valid);
    const V lse = LoadGroups<V>(in_.lse + pixel * groups + first, valid);
    V dy[m];
    V dot = {};
    for (int t = 0; t < m; ++t) {
      dy[t] = LoadVector<V>(s_.d_output.data() + t * row + first);
      dot += dy[t] * LoadVector<V>(s_.output.data() + t * row + first);
    }
    const float scale = g_.scale;
    float* __restrict__ d_prior = out_.d_prior_by_cell + first;
    const float* priors = in_.prior_by_cell + first;
    V d_q = {};
    for (int u = rows.first; u < rows.last; ++u) {
      const int slot = slot_of_tap_[u];
      const float* __restrict__ values = s_.values.data() + slot * s_.slot_pixels_floats + first;
      float* __restrict__ d_values = s_.d_values.data() + slot * s_.slot_pixels_floats + first;
      float* __restrict__ d_keys = s_.d_keys.data() + static_cast<int64_t>(slot) * g_.width * row + first;
      const T* keys = in_.key + ((image * g_.height + TapPosition(g_, i, u)) * g_.width) * groups + first;
      for (int v = cols.first; v < cols.last; ++v) {
        const int x = TapPosition(g_, j, v);
        const int cell = u * g_.kernel_size + v;
        const V k = LoadGroups<V>(keys + static_cast<int64_t>(x) * groups, valid);
        const V prior = LoadVector<V>(priors + cell * padded_);
        const V w = ExpNonPositive(LogitLanes<kComposability>(q, k, prior, scale) - lse);
        const float* cell_values = values + x * staged;
        float* cell_d_values = d_values + x * staged;
        V d_weight = {};
        for (int t = 0; t < m; ++t) {
          d_weight += dy[t] * LoadVector<V>(cell_values + t * row);
          StoreVector(cell_d_values + t * row, LoadVector<V>(cell_d_values + t * row) + w * dy[t]);
        }
        const V d_logit = w * (d_weight - dot);
        d_q += d_logit * PartialLanes<kComposability, false>(q, k);
        StoreVector(d_prior + cell * padded_, LoadVector<V>(d_prior + cell * padded_) + d_logit);
        StoreVector(d_keys + x * row,
                    LoadVector<V>(d_keys + x * row) +
                        scale * (d_logit * PartialLanes<kComposability, true>(q, k)));
      }
    }
    d_q *= scale;
    T* d_query = out_.d_query + pixel * groups + first;
    for (int lane = 0; lane < valid; ++lane) d_query[lane] = static_cast<T>(d_q[lane]);
  }

  // d_value (NHWC) and d_key of the input row in `slot` from its sums.
  void WriteRow(int64_t image, int slot) {
    const int y = s_.tags[slot];
    const int64_t staged = static_cast<int64_t>(kGroupSize) * row_;
    const int64_t first_pixel = (image * g_.height + y) * g_.width;
    for (int x = 0; x < g_.width; ++x) {
      const float* sums = s_.d_values.data() + slot * s_.slot_pixels_floats + x * staged;
      T* d_value = out_.d_value + (first_pixel + x) * g_.channels;
      for (int first = 0; first < g_.groups; first += kBlock) {
        Eight rows[kGroupSize];
        for (int t = 0; t < kGroupSize; ++t) rows[t] = LoadEight(sums + t * row_ + first);
        WriteChannelMajor<T, kGroupSize>(rows, Eight{} + 1.0f, kGroupSize,
                                         std::min(kBlock, g_.groups - first),
                                         d_value + first * kGroupSize);
      }
      const float* d_keys = s_.d_keys.data() + (static_cast<int64_t>(slot) * g_.width + x) * row_;
      T* d_key = out_.d_key + (first_pixel + x) * g_.groups;
      for (int group = 0; group < g_.groups; ++group) d_key[group] = static_cast<T>(d_keys[group]);
    }
    s_.written[y] = 1;
  }

  // Input rows no window reads (stride 2 with k = 1) get zero gradients.
  void ZeroUnreadRows(int64_t image) {
    for (int y = 0; y < g_.height; ++y) {
      if (s_.written[y]) continue;
      const int64_t first_pixel = (image * g_.height + y) * g_.width;
      std::fill_n(out_.d_value + first_pixel * g_.channels,
                  static_cast<int64_t>(g_.width) * g_.channels, T(0.f));
      std::fill_n(out_.d_key + first_pixel * g_.groups, static_cast<int64_t>(g_.width) * g_.groups,
                  T(0.f));
    }
  }

  const Geometry& g_;
  const Inputs& in_;
  const Outputs& out_;
  BackwardRowSlots& s_;
  const int row_;     // ChannelRow: the buffers' row of groups
  const int padded_;  // PaddedGroups: the prior's rows
  const int span_;
  std::vector<int> slot_of_tap_;  // the slot of each window row of the current output row
};

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_BACKWARD_CPU_H_
