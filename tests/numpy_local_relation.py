"""NumPy local relation written straight from `docs/local_relation.md`.

Deliberately naive and independent of `keras_relnet.ops`: explicit loops over
output pixels, groups and window cells, float64 throughout, off-image cells
skipped (not masked), so a bug in the library cannot be mirrored here.
"""

import numpy as np


def numpy_compose(query, key, composability):
    if composability == "squared_difference":
        return -((query - key) ** 2)
    if composability == "dot":
        return query * key
    if composability == "abs_difference":
        return -abs(query - key)
    raise ValueError(composability)


def numpy_geometry_prior(kernel_size, hidden_kernel, hidden_bias, output_kernel, output_bias):
    """Spec step 4: Dense(2 -> h) -> ReLU -> Dense(h -> G) on ((u-r)/r, (v-r)/r)."""
    radius = kernel_size // 2
    groups = output_kernel.shape[1]
    prior = np.zeros((groups, kernel_size, kernel_size))
    for u in range(kernel_size):
        for v in range(kernel_size):
            offset = np.array([(u - radius) / max(radius, 1), (v - radius) / max(radius, 1)])
            hidden = np.maximum(offset @ hidden_kernel + hidden_bias, 0.0)
            prior[:, u, v] = hidden @ output_kernel + output_bias
    return prior


def numpy_local_relation(query, key, value, prior, strides=1, dilation_rate=1,
                         composability="squared_difference", scale=1.0):
    """Spec steps 3, 5-7 for query `[B,Ho,Wo,G]`, key `[B,H,W,G]`, value `[B,H,W,C]`."""
    query, key, value, prior = (np.asarray(a, np.float64) for a in (query, key, value, prior))
    batch, height, width, channels = value.shape
    _, out_h, out_w, groups = query.shape
    assert out_h == -(-height // strides) and out_w == -(-width // strides)
    group_size = channels // groups
    kernel_size = prior.shape[-1]
    radius = kernel_size // 2
    output = np.zeros((batch, out_h, out_w, channels))
    for b in range(batch):
        for i in range(out_h):
            for j in range(out_w):
                for g in range(groups):
                    logits, values = [], []
                    for u in range(kernel_size):
                        for v in range(kernel_size):
                            row = strides * i + dilation_rate * (u - radius)
                            col = strides * j + dilation_rate * (v - radius)
                            if not (0 <= row < height and 0 <= col < width):
                                continue
                            phi = numpy_compose(query[b, i, j, g], key[b, row, col, g], composability)
                            logits.append(scale * phi + prior[g, u, v])
                            values.append(value[b, row, col, g * group_size:(g + 1) * group_size])
                    logits = np.array(logits)
                    weights = np.exp(logits - logits.max())
                    weights /= weights.sum()
                    output[b, i, j, g * group_size:(g + 1) * group_size] = weights @ np.array(values)
    return output


def numpy_local_relation_2d(inputs, query_kernel, key_kernel, value_kernel, geometry_weights,
                            kernel_size, strides=1, dilation_rate=1,
                            composability="squared_difference", scale=1.0):
    """Spec steps 1-7: 1x1 projections, prior MLP, aggregation."""
    inputs = np.asarray(inputs, np.float64)
    query = inputs[:, ::strides, ::strides] @ query_kernel
    key = inputs @ key_kernel
    value = inputs if value_kernel is None else inputs @ value_kernel
    prior = numpy_geometry_prior(kernel_size, *geometry_weights)
    return numpy_local_relation(query, key, value, prior, strides, dilation_rate, composability, scale)
