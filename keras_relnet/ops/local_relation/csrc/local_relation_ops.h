// Declarations shared by the CPU (local_relation_ops.cc, local_relation_grad_cpu.cc) and GPU
// (local_relation_gpu.cc) TensorFlow kernels of the local relation ops.
#ifndef KERAS_RELNET_LOCAL_RELATION_OPS_H_
#define KERAS_RELNET_LOCAL_RELATION_OPS_H_

#include <cstdint>
#include <functional>

#include "local_relation_core.h"
#include "local_relation_support.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace keras_relnet {

#ifdef KERAS_RELNET_WITH_CUDA
constexpr bool kBuiltWithCuda = true;
#else
constexpr bool kBuiltWithCuda = false;
#endif

// The op attributes, read once at kernel construction.
struct RelationAttrs {
  explicit RelationAttrs(::tensorflow::OpKernelConstruction* context);
  int strides = 1;
  int dilation = 1;
  int composability = kSquaredDifference;
  float scale = 1.f;
};

template <typename T>
StorageType StorageOf();
template <>
inline StorageType StorageOf<float>() { return StorageType::kFloat32; }
template <>
inline StorageType StorageOf<Eigen::half>() { return StorageType::kFloat16; }
template <>
inline StorageType StorageOf<Eigen::bfloat16>() { return StorageType::kBFloat16; }

// Unimplemented with the reason when UnsupportedReason (local_relation_support.h)
// rejects the call on `device`.
::tensorflow::Status CheckSupported(KernelDevice device, StorageType type, const Geometry& g);

// Checks inputs 0-3 (query, key, value, prior) and describes the call.
::tensorflow::Status CheckedGeometry(::tensorflow::OpKernelContext* context,
                                     const RelationAttrs& attrs, Geometry* geometry);

// Checks the extra inputs 4-6 (output, log_sum_exp, d_output) of the gradient op.
::tensorflow::Status CheckGradInputs(::tensorflow::OpKernelContext* context, const Geometry& g);

// Allocates the forward op's output [B, Ho, Wo, C] and log-sum-exp [B, Ho, Wo, G].
::tensorflow::Status AllocateForwardOutputs(::tensorflow::OpKernelContext* context,
                                            const Geometry& g, ::tensorflow::Tensor** output,
                                            ::tensorflow::Tensor** lse);

// Allocates the gradient op's outputs, shaped like inputs 0-3.
::tensorflow::Status AllocateGradOutputs(::tensorflow::OpKernelContext* context,
                                         ::tensorflow::Tensor** d_query,
                                         ::tensorflow::Tensor** d_key,
                                         ::tensorflow::Tensor** d_value,
                                         ::tensorflow::Tensor** d_prior);

// Runs fn(begin, end) over [0, rows) on TF's CPU thread pool.
void ParallelRows(::tensorflow::OpKernelContext* context, int64_t rows, int64_t cost_per_row,
                  const std::function<void(int64_t, int64_t)>& fn);

// Runs fn(begin, end) over [0, rows) in one contiguous block per worker
// thread. For the forward: a block stages all k window rows for its first
// output row and one new row per row after it, so fewer blocks stage less
// (3-7% faster than cost-model sharding at the LR-Net-50 shapes).
void ParallelRowBlocks(::tensorflow::OpKernelContext* context, int64_t rows,
                       const std::function<void(int64_t, int64_t)>& fn);

// Register the forward or the gradient kernel of `DEVICE` for storage type T.
#define KERAS_RELNET_REGISTER_FORWARD_KERNEL(DEVICE, T, Forward) \
  REGISTER_KERNEL_BUILDER(                                        \
      Name("KerasRelnetLocalRelation").Device(DEVICE).TypeConstraint<T>("T"), Forward<T>)
#define KERAS_RELNET_REGISTER_GRAD_KERNEL(DEVICE, T, Grad) \
  REGISTER_KERNEL_BUILDER(                                  \
      Name("KerasRelnetLocalRelationGrad").Device(DEVICE).TypeConstraint<T>("T"), Grad<T>)
#define KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE, T, Forward, Grad) \
  KERAS_RELNET_REGISTER_FORWARD_KERNEL(DEVICE, T, Forward);              \
  KERAS_RELNET_REGISTER_GRAD_KERNEL(DEVICE, T, Grad)

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_OPS_H_
