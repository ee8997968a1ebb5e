// TensorFlow GPU kernels of the local relation ops: validate with the CPU
// kernels' checks, then call the CUDA launchers on TF's stream. Compiled only
// when nvcc is available (KERAS_RELNET_WITH_CUDA).
#define EIGEN_USE_GPU

#include "local_relation_kernels.h"
#include "local_relation_ops.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/util/determinism.h"

namespace keras_relnet {
namespace {

using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

void* StreamOf(OpKernelContext* context) {
  return const_cast<void*>(
      static_cast<const void*>(context->eigen_device<Eigen::GpuDevice>().stream()));
}

#define CHECK_LAUNCH(context, error)                                                      \
  OP_REQUIRES(context, (error) == 0,                                                     \
              ::tensorflow::errors::Internal("local relation CUDA kernel failed: cudaError ", \
                                             error))

template <typename T>
class LocalRelationGpu : public OpKernel {
 public:
  explicit LocalRelationGpu(OpKernelConstruction* context) : OpKernel(context), attrs_(context) {}

  void Compute(OpKernelContext* context) override {
    Geometry g;
    OP_REQUIRES_OK(context, CheckedGeometry(context, attrs_, &g));
    OP_REQUIRES_OK(context, CheckSupported(KernelDevice::kCuda, StorageOf<T>(), g));
    Tensor *output = nullptr, *lse = nullptr;
    OP_REQUIRES_OK(context, AllocateForwardOutputs(context, g, &output, &lse));
    if (output->NumElements() == 0) return;
    const int error = LaunchLocalRelationForward(
        g, StorageOf<T>(), context->input(0).flat<T>().data(), context->input(1).flat<T>().data(),
        context->input(2).flat<T>().data(), context->input(3).flat<float>().data(),
        output->flat<T>().data(), lse->flat<float>().data(), StreamOf(context));
    CHECK_LAUNCH(context, error);
  }

 private:
  RelationAttrs attrs_;
};

template <typename T>
class LocalRelationGradGpu : public OpKernel {
 public:
  explicit LocalRelationGradGpu(OpKernelConstruction* context)
      : OpKernel(context), attrs_(context) {}

  void Compute(OpKernelContext* context) override {
    Geometry g;
    OP_REQUIRES_OK(context, CheckedGeometry(context, attrs_, &g));
    OP_REQUIRES_OK(context, CheckGradInputs(context, g));
    OP_REQUIRES_OK(context, CheckSupported(KernelDevice::kCuda, StorageOf<T>(), g));
    Tensor *d_query = nullptr, *d_key = nullptr, *d_value = nullptr, *d_prior = nullptr;
    OP_REQUIRES_OK(context, AllocateGradOutputs(context, &d_query, &d_key, &d_value, &d_prior));
    // Under tf.config.experimental.enable_op_determinism() the backward adds
    // its sums in a fixed order (bit-identical from run to run).
    const bool fixed_order = ::tensorflow::OpDeterminismRequired();
    Tensor workspace;
    OP_REQUIRES_OK(context, context->allocate_temp(
                                ::tensorflow::DT_FLOAT,
                                ::tensorflow::TensorShape(
                                    {LocalRelationBackwardWorkspace(g, fixed_order)}),
                                &workspace));
    const int error = LaunchLocalRelationBackward(
        g, StorageOf<T>(), context->input(0).flat<T>().data(), context->input(1).flat<T>().data(),
        context->input(2).flat<T>().data(), context->input(3).flat<float>().data(),
        context->input(4).flat<T>().data(), context->input(5).flat<float>().data(),
        context->input(6).flat<T>().data(), d_query->flat<T>().data(), d_key->flat<T>().data(),
        d_value->flat<T>().data(), d_prior->flat<float>().data(), workspace.flat<float>().data(),
        fixed_order, StreamOf(context));
    CHECK_LAUNCH(context, error);
  }

 private:
  RelationAttrs attrs_;
};

}  // namespace

KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE_GPU, float, LocalRelationGpu, LocalRelationGradGpu);
KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE_GPU, Eigen::half, LocalRelationGpu,
                                       LocalRelationGradGpu);
KERAS_RELNET_REGISTER_RELATION_KERNELS(DEVICE_GPU, Eigen::bfloat16, LocalRelationGpu,
                                       LocalRelationGradGpu);

}  // namespace keras_relnet
