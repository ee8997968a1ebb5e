// The CPU kernel of KerasRelnetLocalRelationGrad (the op and its checks are
// registered in local_relation_ops.cc): the one-pass backward per image when
// there are at least as many images as threads (channel-major,
// local_relation_backward_cpu.h, for m up to 32), else the two passes.
#include <algorithm>
#include <type_traits>
#include <vector>

#include "local_relation_backward_cpu.h"
#include "local_relation_cpu.h"
#include "local_relation_ops.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace keras_relnet {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

namespace {

template <typename T>
class LocalRelationGradCpu : public OpKernel {
 public:
  explicit LocalRelationGradCpu(OpKernelConstruction* context)
      : OpKernel(context), attrs_(context) {}

  void Compute(OpKernelContext* context) override {
    Geometry g;
    OP_REQUIRES_OK(context, CheckedGeometry(context, attrs_, &g));
    OP_REQUIRES_OK(context, CheckGradInputs(context, g));
    OP_REQUIRES_OK(context, CheckSupported(KernelDevice::kCpu, StorageOf<T>(), g));
    Tensor *d_query = nullptr, *d_key = nullptr, *d_value = nullptr, *d_prior = nullptr;
    OP_REQUIRES_OK(context, AllocateGradOutputs(context, &d_query, &d_key, &d_value, &d_prior));
    const int padded = PaddedGroups(g);
    const int64_t cells_groups = static_cast<int64_t>(g.num_cells()) * padded;
    float* d_prior_out = d_prior->flat<float>().data();
    std::fill(d_prior_out, d_prior_out + static_cast<int64_t>(g.num_cells()) * g.groups, 0.f);
    if (g.batch == 0) {
      d_query->flat<T>().setZero();
      d_key->flat<T>().setZero();
      d_value->flat<T>().setZero();
      return;
    }
    const std::vector<float> prior = PriorByCell(g, context->input(3).flat<float>().data());
    Inputs<T> in{context->input(0).flat<T>().data(), context->input(1).flat<T>().data(),
                 context->input(2).flat<T>().data(),  prior.data(),
                 context->input(4).flat<T>().data(), context->input(5).flat<float>().data(),
                 context->input(6).flat<T>().data()};
    // Each block of work adds its prior gradient into its own partial sum; the
    // partials are added in block order, so for a given thread count the
    // result is deterministic.
    std::vector<float> partials;
    const int threads = context->device()->tensorflow_cpu_worker_threads()->num_threads;
    WithConstants(g, [&](auto composability, auto group_size) {
      constexpr int kComposability = decltype(composability)::value;
      constexpr int kGroupSize = decltype(group_size)::value;
      if (g.batch >= threads) {
        OP_REQUIRES_OK(context, (OnePass<kComposability, kGroupSize>(context, g, in, d_query,
                                                                     d_key, d_value, &partials)));
      } else {
        OP_REQUIRES_OK(context, (TwoPasses<kComposability, kGroupSize>(
                                    context, g, in, d_query, d_key, d_value, &partials)));
      }
    });
    if (!context->status().ok()) return;
    const int64_t blocks = static_cast<int64_t>(partials.size()) / cells_groups;
    for (int64_t block = 0; block < blocks; ++block)
      for (int cell = 0; cell < g.num_cells(); ++cell)
        for (int group = 0; group < g.groups; ++group)
          d_prior_out[group * g.num_cells() + cell] +=
              partials[block * cells_groups + cell * padded + group];
  }

 private:
  template <typename U>
  struct Inputs {
    const U *query, *key, *value;
    const float* prior_by_cell;
    const U* output;
    const float* lse;
    const U* d_output;
  };

  static int64_t CellCost(const Geometry& g) {
    return static_cast<int64_t>(g.num_cells()) * (2 * g.channels + 12 * g.groups);
  }

  // One image of OnePass: zeroes its float sums, scatters into them and writes
  // its d_key (and d_value unless T is float) while they are in cache.
  template <int kComposability, int kGroupSize>
  static void BackwardImage(const Geometry& g, const Inputs<T>& in, int64_t image, T* d_query,
                            T* d_key, T* d_value, float* key_sums, float* value_sums,
                            float* prior_partial) {
    const int padded = PaddedGroups(g);
    const int64_t pixels = static_cast<int64_t>(g.height) * g.width;
    const int64_t first = image * pixels;
    std::fill(key_sums + first * padded, key_sums + (first + pixels) * padded, 0.f);
    std::fill(value_sums + first * g.channels, value_sums + (first + pixels) * g.channels, 0.f);
    BackwardImages<T, kComposability, kGroupSize>(g, in.query, in.key, in.value, in.prior_by_cell,
                                                  in.output, in.lse, in.d_output, d_query,
                                                  prior_partial, key_sums, value_sums, image,
                                                  image + 1);
    for (int64_t pixel = first; pixel < first + pixels; ++pixel)
      for (int group = 0; group < g.groups; ++group)
        d_key[pixel * g.groups + group] = static_cast<T>(key_sums[pixel * padded + group]);
    if (!std::is_same<T, float>::value) {
      for (int64_t c = first * g.channels; c < (first + pixels) * g.channels; ++c)
        d_value[c] = static_cast<T>(value_sums[c]);
    }
  }

  // One pass per image (a window never leaves its image, so images run in
  // parallel), scattering d_key and d_value into float sums.
  template <int kComposability, int kGroupSize>
  Status OnePass(OpKernelContext* context, const Geometry& g, const Inputs<T>& in,
                 Tensor* d_query, Tensor* d_key, Tensor* d_value, std::vector<float>* partials) {
    const int64_t cells_groups = static_cast<int64_t>(g.num_cells()) * PaddedGroups(g);
    partials->assign(g.batch * cells_groups, 0.f);
    if constexpr (kChannelMajorBackward<kGroupSize>) {
      using Backward = ImageBackward<T, kComposability, kGroupSize>;
      const typename Backward::Inputs inputs{in.query, in.key,    in.value,   in.prior_by_cell,
                                             in.output, in.lse,   in.d_output};
      ParallelRows(context, g.batch, CellCost(g) * g.out_height * g.out_width,
                   [&](int64_t first, int64_t last) {
                     BackwardRowSlots slots(g);
                     for (int64_t image = first; image < last; ++image) {
                       const typename Backward::Outputs outputs{
                           d_query->flat<T>().data(), d_key->flat<T>().data(),
                           d_value->flat<T>().data(), partials->data() + image * cells_groups};
                       Backward(g, inputs, outputs, slots).Run(image);
                     }
                   });
      return Status();
    }
    // float32 sums: d_key's rows padded like the scratch rows (so the per-cell
    // update is whole vectors), d_value's the output itself when T is float.
    const int padded = PaddedGroups(g);
    Tensor key_sum, value_sum;
    TF_RETURN_IF_ERROR(context->allocate_temp(
        ::tensorflow::DT_FLOAT, TensorShape({g.batch, g.height, g.width, padded}), &key_sum));
    if (std::is_same<T, float>::value) {
      value_sum = *d_value;
    } else {
      TF_RETURN_IF_ERROR(
          context->allocate_temp(::tensorflow::DT_FLOAT, d_value->shape(), &value_sum));
    }
    ParallelRows(context, g.batch,
                 CellCost(g) * g.out_height * g.out_width, [&](int64_t first, int64_t last) {
                   for (int64_t image = first; image < last; ++image) {
                     BackwardImage<kComposability, kGroupSize>(
                         g, in, image, d_query->flat<T>().data(), d_key->flat<T>().data(),
                         d_value->flat<T>().data(), key_sum.flat<float>().data(),
                         value_sum.flat<float>().data(), partials->data() + image * cells_groups);
                   }
                 });
    return Status();
  }

  // Fewer images than threads: rows of output pixels (d_query, the prior, dot),
  // then rows of input pixels gathering d_key and d_value.
  template <int kComposability, int kGroupSize>
  Status TwoPasses(OpKernelContext* context, const Geometry& g, const Inputs<T>& in,
                   Tensor* d_query, Tensor* d_key, Tensor* d_value,
                   std::vector<float>* partials) {
    const int64_t cells_groups = static_cast<int64_t>(g.num_cells()) * PaddedGroups(g);
    Tensor dot;
    TF_RETURN_IF_ERROR(context->allocate_temp(
        ::tensorflow::DT_FLOAT, TensorShape({g.batch, g.out_height, g.out_width, g.groups}),
        &dot));
    float* dots = dot.flat<float>().data();
    const int64_t out_rows = g.batch * g.out_height;
    const int64_t blocks = std::min<int64_t>(out_rows, 64);
    partials->assign(blocks * cells_groups, 0.f);
    ParallelRows(context, blocks, CellCost(g) * g.out_width * (out_rows / blocks + 1),
                 [&](int64_t first, int64_t last) {
                   for (int64_t block = first; block < last; ++block) {
                     BackwardOutputRows<T, kComposability, kGroupSize>(
                         g, in.query, in.key, in.value, in.prior_by_cell, in.output, in.lse,
                         in.d_output, d_query->flat<T>().data(), dots,
                         partials->data() + block * cells_groups, block * out_rows / blocks,
                         (block + 1) * out_rows / blocks);
                   }
                 });
    ParallelRows(context, g.batch * g.height, CellCost(g) * g.width,
                 [&](int64_t begin, int64_t end) {
                   BackwardInputRows<T, kComposability, kGroupSize>(
                       g, in.query, in.key, in.value, in.prior_by_cell, in.lse, in.d_output,
                       dots, d_key->flat<T>().data(), d_value->flat<T>().data(), begin, end);
                 });
    return Status();
  }

  RelationAttrs attrs_;
};

}  // namespace

KERAS_RELNET_REGISTER_GRAD_KERNEL(DEVICE_CPU, float, LocalRelationGradCpu);
KERAS_RELNET_REGISTER_GRAD_KERNEL(DEVICE_CPU, Eigen::half, LocalRelationGradCpu);
KERAS_RELNET_REGISTER_GRAD_KERNEL(DEVICE_CPU, Eigen::bfloat16, LocalRelationGradCpu);

}  // namespace keras_relnet
