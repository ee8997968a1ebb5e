"""Local relation: k x k window attention with scalar key/query (LR-Net, ICCV 2019).

The math of the local relation layer; every front end (the Keras 3 layer, the
Model Garden layer, the compiled kernels) calls it or is tested against it.
Layout is NHWC. The formula (`docs/local_relation.md`), for output pixel
(i, j), group g and window cell (u, v), with r = k // 2, s = strides and
d = dilation_rate:

    cell   = (s*i + d*(u - r), s*j + d*(v - r))
    L      = scale * Phi(q[i, j, g], key[cell, g]) + prior[g, u, v]   (-inf off-image)
    w      = softmax over the k*k cells of L
    y[i, j, g*m + t] = sum_cells w * value[cell, g*m + t]

The package, one file per job:

- `op.py`: the public ops, `local_relation_aggregation` and `local_relation_2d`;
- `window.py`: their checks, the static `Window`, the prior and Phi;
- `dispatch.py`: which implementation runs a call ("auto"'s policy);
- `reference.py`: the formula written plainly, what the drivers are tested against;
- `drivers.py` and `grid.py`: the "reference" (while loop) and "xla" drivers;
- `export_forward.py`: the forward of exported graphs (builtin ops only),
  `export_tiles.py` its tiled form for fixed sizes;
- `kernel.py`: the loader and gate of the compiled kernels ("custom").
"""

from keras_relnet.ops.local_relation.dispatch import (
    IMPLEMENTATIONS,
    explain,
    resolve_implementation,
)
from keras_relnet.ops.local_relation.op import local_relation_2d, local_relation_aggregation
from keras_relnet.ops.local_relation.window import (
    COMPOSABILITIES,
    STRIDES,
    compose,
    geometry_prior,
    output_size,
    window_offsets,
)
