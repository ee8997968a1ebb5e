// The CPU reference of the CUDA harness: the CPU kernels of
// local_relation_cpu.h, single-threaded. Compiled by the host compiler (g++),
// as the CPU kernels use GCC vector extensions that nvcc's front end does not.
#ifndef KERAS_RELNET_HARNESS_CPU_REFERENCE_H_
#define KERAS_RELNET_HARNESS_CPU_REFERENCE_H_

#include <vector>

#include "local_relation_core.h"

namespace keras_relnet {

// Host float32 tensors of one case: the inputs, then what CpuReference fills.
struct Tensors {
  std::vector<float> query, key, value, prior, d_output;
  std::vector<float> output, lse, d_query, d_key, d_value, d_prior;
};

// Fills output, lse and the four gradients of `t` from its inputs.
void CpuReference(const Geometry& g, Tensors& t);

}  // namespace keras_relnet

#endif  // KERAS_RELNET_HARNESS_CPU_REFERENCE_H_
