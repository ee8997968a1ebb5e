"""The local relation written the way the formula reads: the yardstick of the drivers.

Every window cell is sliced out, the k*k logits are stacked and put through
one softmax, and the weighted values are summed. This holds k*k copies of
the values, so it is only for checking: the drivers (`drivers.py`), the
export forward and the compiled kernels are tested against it, and its
gradient is TensorFlow's own.
"""

import numpy as np
import tensorflow as tf

from keras_relnet.ops.local_relation.window import compose, output_size
from keras_relnet.ops.precision import compute_dtype


def local_relation_formula(query, key, value, geometry_prior, strides=1, dilation_rate=1,
                           composability="squared_difference", scale=1.0):
    """`y = sum_cells softmax_cells(scale * Phi(q, key_cell) + prior_cell) * value_cell`.

    Args:
        query: `[B, Ho, Wo, G]`, the query at the window centres.
        key: `[B, H, W, G]`.
        value: `[B, H, W, C]`, channel `c` in group `c // (C // G)`.
        geometry_prior: `[G, k, k]`.
        strides, dilation_rate, composability, scale: as in
            `local_relation_aggregation`.

    Returns:
        `[B, Ho, Wo, C]` in the dtype of `value`; off-image cells get no weight.

    Example:
    >>> x = tf.ones([1, 3, 3, 2])
    >>> y = local_relation_formula(tf.zeros([1, 3, 3, 1]), tf.zeros([1, 3, 3, 1]), x,
    ...                            tf.zeros([1, 3, 3]))
    >>> bool(tf.reduce_max(tf.abs(y - x)) < 1e-6)  # weights sum to 1 over the inside cells
    True
    """
    dtype = compute_dtype(value.dtype)
    batch, height, width, channels = value.shape
    groups, kernel_size = key.shape[-1], geometry_prior.shape[-1]
    out_height, out_width = output_size(height, strides), output_size(width, strides)
    pad = (kernel_size // 2) * dilation_rate
    padded = lambda t: tf.pad(tf.cast(t, dtype), [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    keys, values = padded(key), padded(value)
    inside = padded(tf.ones([1, height, width, 1]))

    def at_cell(tensor, u, v):
        top, left = u * dilation_rate, v * dilation_rate
        return tensor[:, top:top + strides * (out_height - 1) + 1:strides,
                      left:left + strides * (out_width - 1) + 1:strides]

    logits, cell_values = [], []
    for u in range(kernel_size):
        for v in range(kernel_size):
            logit = (scale * compose(tf.cast(query, dtype), at_cell(keys, u, v), composability)
                     + tf.cast(geometry_prior[:, u, v], dtype))
            logits.append(tf.where(at_cell(inside, u, v) > 0, logit,
                                   tf.constant(-np.inf, dtype)))
            cell_values.append(tf.reshape(at_cell(values, u, v), [
                batch, out_height, out_width, groups, channels // groups]))
    weights = tf.nn.softmax(tf.stack(logits, -1))  # [B, Ho, Wo, G, k*k]
    output = tf.einsum("bhwgn,bhwgmn->bhwgm", weights, tf.stack(cell_values, -1))
    return tf.cast(tf.reshape(output, [batch, out_height, out_width, channels]), value.dtype)
