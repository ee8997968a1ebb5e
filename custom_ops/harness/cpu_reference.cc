// The harness's CPU reference (see cpu_reference.h).
#include "cpu_reference.h"

#include "local_relation_cpu.h"
#include "local_relation_forward_cpu.h"

namespace keras_relnet {

// The CPU kernels, single-threaded: the reference of this harness.
void CpuReference(const Geometry& g, Tensors& t) {
  const size_t out_pixels = g.batch * g.out_height * g.out_width;
  t.output.assign(out_pixels * g.channels, 0.f);
  t.lse.assign(out_pixels * g.groups, 0.f);
  t.d_query.assign(t.query.size(), 0.f);
  t.d_key.assign(t.key.size(), 0.f);
  t.d_value.assign(t.value.size(), 0.f);
  std::vector<float> dot(out_pixels * g.groups);
  std::vector<float> d_prior_by_cell(static_cast<size_t>(g.num_cells()) * PaddedGroups(g), 0.f);
  const std::vector<float> prior = PriorByCell(g, t.prior.data());
  WithConstants(g, [&](auto composability, auto group_size) {
    constexpr int kC = decltype(composability)::value, kM = decltype(group_size)::value;
    ForwardRows<float, kC, kM>(g, t.query.data(), t.key.data(), t.value.data(), prior.data(),
                               t.output.data(), t.lse.data(), 0, g.batch * g.out_height);
    BackwardOutputRows<float, kC, kM>(g, t.query.data(), t.key.data(), t.value.data(),
                                      prior.data(), t.output.data(), t.lse.data(),
                                      t.d_output.data(), t.d_query.data(), dot.data(),
                                      d_prior_by_cell.data(), 0, g.batch * g.out_height);
    BackwardInputRows<float, kC, kM>(g, t.query.data(), t.key.data(), t.value.data(),
                                     prior.data(), t.lse.data(), t.d_output.data(), dot.data(),
                                     t.d_key.data(), t.d_value.data(), 0, g.batch * g.height);
  });
  t.d_prior.assign(t.prior.size(), 0.f);
  for (int cell = 0; cell < g.num_cells(); ++cell)
    for (int group = 0; group < g.groups; ++group)
      t.d_prior[group * g.num_cells() + cell] = d_prior_by_cell[cell * PaddedGroups(g) + group];
}

}  // namespace keras_relnet
