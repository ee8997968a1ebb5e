// TensorFlow registration of the local relation ops, their shared checks and
// the forward CPU kernel (the gradient's is in local_relation_grad_cpu.cc, a
// separate translation unit so that the two compile in parallel).
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
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "local_relation_cpu.h"
#include "local_relation_forward_cpu.h"
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

void ParallelRows(OpKernelContext* context, int64_t rows, int64_t cost_per_row,
                  const std::function<void(int64_t, int64_t)>& fn) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  ::tensorflow::Shard(workers->num_threads, workers->workers, rows, cost_per_row, fn);
}

void ParallelRowBlocks(OpKernelContext* context, int64_t rows,
                       const std::function<void(int64_t, int64_t)>& fn) {
  auto* workers = context->device()->tensorflow_cpu_worker_threads();
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(rows, workers->num_threads));
  if (blocks == 1) return fn(0, rows);
  using Pool = ::tensorflow::thread::ThreadPool;
  const int64_t block_rows = (rows + blocks - 1) / blocks;
  workers->workers->ParallelFor(rows, Pool::SchedulingParams::Fixed(block_rows), fn);
}

namespace {

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
    WithConstants(g, [&](auto composability, auto group_size) {
      ParallelRowBlocks(context, g.batch * g.out_height, [&](int64_t begin, int64_t end) {
        ForwardRows<T, decltype(composability)::value, decltype(group_size)::value>(
            g, query, key, value, prior.data(), out, log_sum_exp, begin, end);
      });
    });
  }

 private:
  RelationAttrs attrs_;
};

}  // namespace

KERAS_RELNET_REGISTER_FORWARD_KERNEL(DEVICE_CPU, float, LocalRelationCpu);
KERAS_RELNET_REGISTER_FORWARD_KERNEL(DEVICE_CPU, Eigen::half, LocalRelationCpu);
KERAS_RELNET_REGISTER_FORWARD_KERNEL(DEVICE_CPU, Eigen::bfloat16, LocalRelationCpu);

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
