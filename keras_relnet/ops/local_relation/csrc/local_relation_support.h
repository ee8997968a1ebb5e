// Which calls the compiled local relation kernels run: the one table that the
// TensorFlow kernels (CPU and GPU), the CUDA launchers, the standalone harness
// and the Python gate (keras_relnet/ops/local_relation_kernel.py, through the
// C entry points of local_relation_ops.cc) all read. No TensorFlow, no CUDA.
#ifndef KERAS_RELNET_LOCAL_RELATION_SUPPORT_H_
#define KERAS_RELNET_LOCAL_RELATION_SUPPORT_H_

#include <cstdint>

#include "local_relation_core.h"  // LR_HOST_DEVICE

namespace keras_relnet {

// Storage type of query, key, value, output and their gradients; arithmetic
// is float32 in every case. prior, log_sum_exp and d_prior are float32.
enum class StorageType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

enum class KernelDevice : int { kCpu = 0, kCuda = 1 };

// A CUDA warp owns 32 consecutive channels of one pixel, so the m channels of
// a group must lie within one warp.
constexpr int kCudaWarp = 32;
// Dynamic shared memory a CUDA block may use without an opt-in attribute.
constexpr int64_t kCudaSharedMemoryBytes = 48 * 1024;

// Groups of one 32-channel CUDA chunk.
LR_HOST_DEVICE int CudaChunkGroups(int group_size) { return (kCudaWarp + group_size - 1) / group_size; }

// Shared memory of the CUDA backward pass's prior-gradient tile: a float per
// window cell and group of the block's 32-channel chunk.
inline int64_t CudaPriorTileBytes(int kernel_size, int group_size) {
  return static_cast<int64_t>(sizeof(float)) * kernel_size * kernel_size *
         CudaChunkGroups(group_size);
}

// Why the kernels of `device` cannot run a call (nullptr when they can). The
// shapes themselves (sizes, strides, dilation) are checked by the ops.
inline const char* UnsupportedReason(KernelDevice device, StorageType type, int kernel_size,
                                     int group_size) {
  if (type != StorageType::kFloat32 && type != StorageType::kFloat16 &&
      type != StorageType::kBFloat16)
    return "the compiled kernels store float32, float16 or bfloat16 only";
  if (kernel_size < 1 || kernel_size % 2 == 0) return "the kernel size must be odd and positive";
  if (group_size < 1) return "channels_per_group must be positive";
  if (device == KernelDevice::kCuda) {
    if (kCudaWarp % group_size) return "the CUDA kernels need channels_per_group dividing 32";
    if (CudaPriorTileBytes(kernel_size, group_size) > kCudaSharedMemoryBytes)
      return "the CUDA kernels need kernel_size**2 * ceil(32 / channels_per_group) <= 12288 "
             "(the backward pass's prior-gradient tile in 48 KiB of shared memory)";
  }
  return nullptr;
}

}  // namespace keras_relnet

#endif  // KERAS_RELNET_LOCAL_RELATION_SUPPORT_H_
