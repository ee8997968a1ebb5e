// TensorFlow registration of the local relation ops and their CPU kernels.
//
//   KerasRelnetLocalRelation(query, key, value, prior) -> (output, log_sum_exp)
//   KerasRelnetLocalRelationGrad(query, key, value, prior, output, log_sum_exp,
//                                d_output) -> (d_query, d_key, d_value, d_prior)
//
// query [B, Ho, Wo, G], key [B, H, W, G], value [B, H, W, C], prior [G, k, k]
// (float32), Ho = ceil(H / strides); T is float, half or bfloat16 (computed in
// float32). The math is in local_relation_core.h / local_relation_cpu.h, what
// the kernels support in local_relation_support.h.
//
// Two C functions, for callers that must not run a TensorFlow op (the Python
// gate reads them with ctypes while a graph is being traced):
//   KerasRelnetLocalRelationDevices() -> "cpu" or "cpu,cuda"
//   KerasRelnetLocalRelationUnsupported(device, dtype, kernel_size, group_size)
//       -> why the kernels of device ("cpu" or "cuda") cannot run such a call
//          with dtype ("float32", "float16", "bfloat16", ...), or NULL
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "local_relation_cpu.h"
#include "local_relation_ops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace keras_relnet {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

namespace {

// Checks the four relation inputs as far as their shapes are known and gives
// the output [B, Ho, Wo, C] and log-sum-exp [B, Ho, Wo, G] shapes.
Status RelationShapes(InferenceContext* c, ShapeHandle* output, ShapeHandle* lse) {
  ShapeHandle query, key, value, prior;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &query));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 4, &key));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 4, &value));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 3, &prior));
  DimensionHandle batch, groups, unused;
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(query, 0), c->Dim(key, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(value, 0), &batch));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(key, 1), c->Dim(value, 1), &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(key, 2), c->Dim(value, 2), &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(query, 3), c->Dim(key, 3), &groups));
  TF_RETURN_IF_ERROR(c->Merge(groups, c->Dim(prior, 0), &groups));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(prior, 1), c->Dim(prior, 2), &unused));
  int strides;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  DimensionHandle out[2];
  for (int axis : {1, 2}) {
    DimensionHandle size;
    TF_RETURN_IF_ERROR(c->Merge(c->Dim(key, axis), c->Dim(value, axis), &size));
    out[axis - 1] = c->Dim(query, axis);
    if (c->ValueKnown(size)) {
      TF_RETURN_IF_ERROR(c->Merge(out[axis - 1], c->MakeDim((c->Value(size) + strides - 1) / strides),
                                  &out[axis - 1]));
    }
  }
  *output = c->MakeShape({batch, out[0], out[1], c->Dim(value, 3)});
  *lse = c->MakeShape({batch, out[0], out[1], groups});
  return Status();
}

Status ForwardShape(InferenceContext* c) {
  ShapeHandle output, lse;
  TF_RETURN_IF_ERROR(RelationShapes(c, &output, &lse));
  c->set_output(0, output);
  c->set_output(1, lse);
  return Status();
}

Status GradShape(InferenceContext* c) {
  ShapeHandle output, lse, given;
  TF_RETURN_IF_ERROR(RelationShapes(c, &output, &lse));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 4, &given));
  TF_RETURN_IF_ERROR(c->Merge(output, given, &output));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 4, &given));
  TF_RETURN_IF_ERROR(c->Merge(output, given, &output));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(5), 4, &given));
  TF_RETURN_IF_ERROR(c->Merge(lse, given, &lse));
  for (int input = 0; input < 4; ++input) c->set_output(input, c->input(input));
  return Status();
}

}  // namespace

// The attributes of both ops.
#define RELATION_ATTRIBUTES                                                  \
  .Attr("T: {float, half, bfloat16}")                                        \
      .Attr("strides: int >= 1 = 1")                                         \
      .Attr("dilation_rate: int >= 1 = 1")                                   \
      .Attr("composability: {'squared_difference', 'dot', 'abs_difference'} = " \
            "'squared_difference'")                                          \
      .Attr("scale: float = 1.0")

REGISTER_OP("KerasRelnetLocalRelation")
    .Input("query: T")
    .Input("key: T")
    .Input("value: T")
    .Input("prior: float")
    .Output("output: T")
    .Output("log_sum_exp: float")
    RELATION_ATTRIBUTES
    .SetShapeFn(ForwardShape)
    .Doc("Local relation aggregation (keras_relnet.ops.local_relation), fused.");

REGISTER_OP("KerasRelnetLocalRelationGrad")
    .Input("query: T")
    .Input("key: T")
    .Input("value: T")
    .Input("prior: float")
    .Input("output: T")
    .Input("log_sum_exp: float")
    .Input("d_output: T")
    .Output("d_query: T")
    .Output("d_key: T")
    .Output("d_value: T")
    .Output("d_prior: float")
    RELATION_ATTRIBUTES
    .SetShapeFn(GradShape)
    .Doc("Gradients of KerasRelnetLocalRelation (weights recomputed from log_sum_exp).");

RelationAttrs::RelationAttrs(OpKernelConstruction* context) {
  OP_REQUIRES_OK(context, context->GetAttr("strides", &strides));
  OP_REQUIRES_OK(context, context->GetAttr("dilation_rate", &dilation));
  OP_REQUIRES_OK(context, context->GetAttr("scale", &scale));
  std::string name;
  OP_REQUIRES_OK(context, context->GetAttr("composability", &name));
  composability = name == "dot" ? kDot : name == "abs_difference" ? kAbsDifference
                                                                   : kSquaredDifference;
  OP_REQUIRES(context, strides == 1 || strides == 2,
              ::tensorflow::errors::InvalidArgument("strides must be 1 or 2; received ",
                                                    strides));
}

namespace {

Status CheckShape(const char* name, const Tensor& tensor, const TensorShape& expected) {
  if (tensor.shape() != expected) {
    return ::tensorflow::errors::InvalidArgument(name, " must have shape ",
                                                 expected.DebugString(), "; received ",
                                                 tensor.shape().DebugString());
  }
  return Status();
}

}  // namespace

Status CheckedGeometry(OpKernelContext* context, const RelationAttrs& attrs,
                       Geometry* geometry) {
  const Tensor& query = context->input(0);
  const Tensor& key = context->input(1);
  const Tensor& value = context->input(2);
  const Tensor& prior = context->input(3);
  const std::pair<const char*, const Tensor*> ranked[] = {
      {"query", &query}, {"key", &key}, {"value", &value}};
  for (const auto& [name, tensor] : ranked) {
    if (tensor->dims() != 4) {
      return ::tensorflow::errors::InvalidArgument(name, " must have rank 4 (NHWC); received shape ",
                                                   tensor->shape().DebugString());
    }
  }
  if (prior.dims() != 3 || prior.dim_size(1) != prior.dim_size(2) || prior.dim_size(1) % 2 == 0) {
    return ::tensorflow::errors::InvalidArgument(
        "prior must have shape [groups, k, k] with odd k; received ", prior.shape().DebugString());
  }
  const int64_t batch = key.dim_size(0), height = key.dim_size(1), width = key.dim_size(2);
  const int64_t groups = key.dim_size(3), channels = value.dim_size(3);
  if (groups == 0 || channels % groups) {
    return ::tensorflow::errors::InvalidArgument(
        "value channels must be a positive multiple of the key groups; received key ",
        key.shape().DebugString(), " and value ", value.shape().DebugString());
  }
  if (height == 0 || width == 0) {
    return ::tensorflow::errors::InvalidArgument("key and value must have non-empty height and "
                                                 "width; received key ",
                                                 key.shape().DebugString());
  }
  const int64_t limit = std::numeric_limits<int32_t>::max();
  if (height > limit || width > limit || channels > limit) {
    return ::tensorflow::errors::InvalidArgument("key/value sizes must fit in int32; received ",
                                                 value.shape().DebugString());
  }
  const int64_t out_height = (height + attrs.strides - 1) / attrs.strides;
  const int64_t out_width = (width + attrs.strides - 1) / attrs.strides;
  TF_RETURN_IF_ERROR(CheckShape("value", value, TensorShape({batch, height, width, channels})));
  TF_RETURN_IF_ERROR(
      CheckShape("query", query, TensorShape({batch, out_height, out_width, groups})));
  TF_RETURN_IF_ERROR(CheckShape("prior", prior,
                                TensorShape({groups, prior.dim_size(1), prior.dim_size(1)})));
  *geometry = MakeGeometry(batch, static_cast<int>(height), static_cast<int>(width),
                           static_cast<int>(channels), static_cast<int>(groups),
                           static_cast<int>(prior.dim_size(1)), attrs.strides, attrs.dilation,
                           attrs.composability, attrs.scale);
  return Status();
}

Status AllocateForwardOutputs(OpKernelContext* context, const Geometry& g, Tensor** output,
                              Tensor** lse) {
  TF_RETURN_IF_ERROR(context->allocate_output(
      0, TensorShape({g.batch, g.out_height, g.out_width, g.channels}), output));
  return context->allocate_output(
      1, TensorShape({g.batch, g.out_height, g.out_width, g.groups}), lse);
}

Status AllocateGradOutputs(OpKernelContext* context, Tensor** d_query, Tensor** d_key,
                           Tensor** d_value, Tensor** d_prior) {
  Tensor** outputs[] = {d_query, d_key, d_value, d_prior};
  for (int index = 0; index < 4; ++index)
    TF_RETURN_IF_ERROR(
        context->allocate_output(index, context->input(index).shape(), outputs[index]));
  return Status();
}

Status CheckSupported(KernelDevice device, StorageType type, const Geometry& g) {
  const char* reason = UnsupportedReason(device, type, g.kernel_size, g.group_size);
  if (reason == nullptr) return Status();
  return ::tensorflow::errors::Unimplemented(reason, "; received kernel_size ", g.kernel_size,
                                             ", channels_per_group ", g.group_size);
}

Status CheckGradInputs(OpKernelContext* context, const Geometry& g) {
  const TensorShape output({g.batch, g.out_height, g.out_width, g.channels});
  TF_RETURN_IF_ERROR(CheckShape("output", context->input(4), output));
  TF_RETURN_IF_ERROR(CheckShape("log_sum_exp", context->input(5),
                                TensorShape({g.batch, g.out_height, g.out_width, g.groups})));
  return CheckShape("d_output", context->input(6), output);
}

namespace {

// Runs fn(begin, end) over [0, rows) on TF's CPU thread pool.
template <typename Fn>
void ParallelRows(OpKernelContext* context, int64_t rows, int64_t cost_per_row, Fn fn) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers->num_threads, workers->workers, rows, cost_per_row, fn);
}

template <typename T>
class LocalRelationCpu : public OpKernel {
 public:
  explicit LocalRelationCpu(OpKernelConstruction* context) : OpKernel(context), attrs_(context) {}

  void Compute(OpKernelContext* context) override {
    Geometry g;
    OP_REQUIRES_OK(context, CheckedGeometry(context, attrs_, &g));
    OP_REQUIRES_OK(context, CheckSupported(KernelDevice::kCpu, StorageOf<T>(), g));
    Tensor *output = nullptr, *lse = nullptr;
    OP_REQUIRES_OK(context, AllocateForwardOutputs(context, g, &output, &lse));
    if (output->NumElements() == 0) return;
    const std::vector<float> prior = PriorByCell(g, context->input(3).flat<float>().data());
    const T* query = context->input(0).flat<T>().data();
    const T* key = context->input(1).flat<T>().data();
    const T* value = context->input(2).flat<T>().data();
    T* out = output->flat<T>().data();
    float* log_sum_exp = lse->flat<float>().data();
    const int64_t cost = static_cast<int64_t>(g.out_width) * g.num_cells() * (g.channels + 8 * g.groups);
    WithConstants(g, [&](auto composability, auto group_size) {
      ParallelRows(context, g.batch * g.out_height, cost, [&](int64_t begin, int64_t end) {
        ForwardRows<T, decltype(composability)::value, decltype(group_size)::value>(
            g, query, key, value, prior.data(), out, log_sum_exp, begin, end);
      });
    });
  }

 private:
  RelationAttrs attrs_;
};

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

KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE_CPU, float, LocalRelationCpu, LocalRelationGradCpu);
KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE_CPU, Eigen::half, LocalRelationCpu,
                                       LocalRelationGradCpu);
KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE_CPU, Eigen::bfloat16, LocalRelationCpu,
                                       LocalRelationGradCpu);

}  // namespace keras_relnet

extern "C" {

__attribute__((visibility("default"))) const char* KerasRelnetLocalRelationDevices() {
  return keras_relnet::kBuiltWithCuda ? "cpu,cuda" : "cpu";
}

__attribute__((visibility("default"))) const char* KerasRelnetLocalRelationUnsupported(
    const char* device, const char* dtype, int kernel_size, int group_size) {
  using keras_relnet::KernelDevice;
  using keras_relnet::StorageType;
  const std::string device_name = device, dtype_name = dtype;
  if (device_name != "cpu" && device_name != "cuda") return "there are no kernels for this device";
  if (device_name == "cuda" && !keras_relnet::kBuiltWithCuda)
    return "the library was built without CUDA (no nvcc at build time)";
  // Not a storage type: UnsupportedReason says which ones are.
  StorageType type = static_cast<StorageType>(-1);
  if (dtype_name == "float32") type = StorageType::kFloat32;
  if (dtype_name == "float16") type = StorageType::kFloat16;
  if (dtype_name == "bfloat16") type = StorageType::kBFloat16;
  return keras_relnet::UnsupportedReason(
      device_name == "cuda" ? KernelDevice::kCuda : KernelDevice::kCpu, type, kernel_size,
      group_size);
}

}  // extern "C"
