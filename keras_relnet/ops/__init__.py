"""Tensor-level math of keras-relnet: one module (or package) per relation family."""

from keras_relnet.ops.local_relation import (
    COMPOSABILITIES,
    IMPLEMENTATIONS,
    compose,
    explain,
    geometry_prior,
    local_relation_2d,
    local_relation_aggregation,
    output_size,
    resolve_implementation,
    window_offsets,
)
