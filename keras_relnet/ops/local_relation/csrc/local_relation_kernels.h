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

// The blocks of the fixed-order backward's first pass: each owns a run of
// `pixels_per_block` output pixels, so there are at most kMaxBlocks of them
// (each holds a [G, k*k] partial of d_prior in the workspace).
struct FixedOrderPriorBlocks {
  static constexpr int64_t kMaxBlocks = 1024;
  int64_t pixels_per_block, count;
  explicit FixedOrderPriorBlocks(const Geometry& g) {
    const int64_t pixels = g.batch * g.out_height * g.out_width;
    pixels_per_block = pixels > kMaxBlocks ? (pixels + kMaxBlocks - 1) / kMaxBlocks : 1;
    count = (pixels + pixels_per_block - 1) / pixels_per_block;
  }
};

// The floats of the backward's workspace: dot (B*Ho*Wo*G), and with
// `fixed_order` the blocks' partials of d_prior.
inline int64_t LocalRelationBackwardWorkspace(const Geometry& g, bool fixed_order) {
  const int64_t dot = g.batch * g.out_height * g.out_width * g.groups;
  if (!fixed_order) return dot;
  return dot + FixedOrderPriorBlocks(g).count * g.groups * g.num_cells();
}

// d_query, d_key, d_value (storage type) and d_prior [G, k, k]; `workspace`
// holds LocalRelationBackwardWorkspace(g, fixed_order) floats. With
// `fixed_order` every sum is added in an order fixed by the shapes alone, so
// repeated calls give bit-identical gradients; without it d_prior is summed
// with atomics (faster; its rounding varies from run to run). Returns a
// cudaError_t or kLaunchUnsupported.
int LaunchLocalRelationBackward(const Geometry& g, StorageType type, const void* query,
                                const void* key, const void* value, const float* prior,
                                const void* output, const float* log_sum_exp,
                                const void* d_output, void* d_query, void* d_key, void* d_value,
                                float* d_prior, float* workspace, bool fixed_order,
                                void* stream);

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_KERNELS_H_
