// Launchers of the CUDA local relation kernels (local_relation_kernels.cu).
// Plain C++ declarations: the TensorFlow GPU kernels and the standalone
// harness both call them, and neither needs CUDA headers to do so.
#ifndef KERAS_RELNET_LOCAL_RELATION_KERNELS_H_
#define KERAS_RELNET_LOCAL_RELATION_KERNELS_H_

#include "local_relation_core.h"
#include "local_relation_support.h"

namespace keras_relnet {

// What the launchers return, instead of a cudaError_t, for a call that
// UnsupportedReason(KernelDevice::kCuda, ...) rejects; they launch nothing.
constexpr int kLaunchUnsupported = -1;

// output [B, Ho, Wo, C] and log_sum_exp [B, Ho, Wo, G]. Returns a cudaError_t
// or kLaunchUnsupported.
int LaunchLocalRelationForward(const Geometry& g, StorageType type, const void* query,
                               const void* key, const void* value, const float* prior,
                               void* output, float* log_sum_exp, void* stream);

// d_query, d_key, d_value (storage type) and d_prior [G, k, k] (zeroed here);
// dot is a float workspace of B*Ho*Wo*G. Returns a cudaError_t or
// kLaunchUnsupported.
int LaunchLocalRelationBackward(const Geometry& g, StorageType type, const void* query,
                                const void* key, const void* value, const float* prior,
                                const void* output, const float* log_sum_exp,
                                const void* d_output, void* d_query, void* d_key, void* d_value,
                                float* d_prior, float* dot, void* stream);

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_KERNELS_H_
