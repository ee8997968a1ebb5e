"""Tensor-level math of keras-relnet: one file per relation family."""

from keras_relnet.ops.local_relation import (
    COMPOSABILITIES,
    compose,
    geometry_prior,
    local_relation,
    local_relation_2d,
    local_relation_flops,
    output_size,
    window_offsets,
)
from keras_relnet.ops.local_relation_dispatch import (
    IMPLEMENTATIONS,
    explain,
    resolve_implementation,
)
