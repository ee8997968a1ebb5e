// Launchers of the CUDA local relation kernels (local_relation_kernels.cu).
// Plain C++ declarations: the TensorFlow GPU kernels and the standalone
// harness both call them, and neither needs CUDA headers to do so.
#ifndef KERAS_RELNET_LOCAL_RELATION_KERNELS_H_
#define KERAS_RELNET_LOCAL_RELATION_KERNELS_H_

#include "local_relation_core.h"

namespace keras_relnet {

// Storage type of query, key, value, output and their gradients; arithmetic
// is float32 in every case. prior, log_sum_exp and d_prior are float32.
enum class StorageType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// Whether the CUDA kernels handle this call; else a message for the caller.
const char* CudaUnsupportedReason(const Geometry& g);

// output [B, Ho, Wo, C] and log_sum_exp [B, Ho, Wo, G]. Returns a cudaError_t.
int LaunchLocalRelationForward(const Geometry& g, StorageType type, const void* query,
                               const void* key, const void* value, const float* prior,
                               void* output, float* log_sum_exp, void* stream);

// d_query, d_key, d_value (storage type) and d_prior [G, k, k] (zeroed here);
// dot is a float workspace of B*Ho*Wo*G. Returns a cudaError_t.
int LaunchLocalRelationBackward(const Geometry& g, StorageType type, const void* query,
                                const void* key, const void* value, const float* prior,
                                const void* output, const float* log_sum_exp,
                                const void* d_output, void* d_query, void* d_key, void* d_value,
                                float* d_prior, float* dot, void* stream);

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_KERNELS_H_
