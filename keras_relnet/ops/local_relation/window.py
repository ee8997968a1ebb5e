"""The window of a local relation: its options, shapes and per-cell formula pieces.

`validated_window` checks every argument of the op and returns the static
`Window` the drivers and kernels are specialised on.
"""

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_relnet.ops import checks
from keras_relnet.ops.precision import compute_dtype

COMPOSABILITIES = ("squared_difference", "dot", "abs_difference")
STRIDES = (1, 2)


class Window(NamedTuple):
    """Static description of the relation window (hashable: keys the XLA cache)."""

    kernel_size: int
    strides: int
    dilation_rate: int
    composability: str
    scale: float

    @property
    def radius(self):
        return self.kernel_size // 2

    @property
    def num_cells(self):
        return self.kernel_size * self.kernel_size

    @property
    def padding(self):
        return self.radius * self.dilation_rate


def output_size(size, strides):
    """Output extent `ceil(size / strides)`; works on ints and int tensors.

    Args:
        size: input height or width.
        strides: 1 or 2.

    Returns:
        The output height or width.

    Example:
    >>> output_size(7, 2)
    4
    """
    return (size + strides - 1) // strides


def window_offsets(kernel_size):
    """Relative offsets of the window cells, the input of the geometry prior.

    Args:
        kernel_size: odd window size k.

    Returns:
        float32 array `[k*k, 2]`: `((u - r) / r, (v - r) / r)` for cells in
        row-major `(u, v)` order (all zeros when k = 1).

    Example:
    >>> window_offsets(3)[0]
    array([-1., -1.], dtype=float32)
    """
    kernel_size = checks.check_odd_positive_int("kernel_size", kernel_size)
    radius = kernel_size // 2
    steps = (np.arange(kernel_size) - radius) / max(radius, 1)
    rows, cols = np.meshgrid(steps, steps, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.float32)


def geometry_prior(
    kernel_size, hidden_kernel, hidden_bias, output_kernel, output_bias
):
    """Learned geometric prior: a 2-layer MLP on the window offsets.

    `P = Dense(h -> G)(relu(Dense(2 -> h)(offsets)))`, computed in float32
    (float64 when the weights are float64); input-independent.

    Args:
        kernel_size: odd window size k.
        hidden_kernel: `[2, h]`.
        hidden_bias: `[h]`.
        output_kernel: `[h, G]`.
        output_bias: `[G]`.

    Returns:
        The prior `[G, k, k]`.

    Example:
    >>> p = geometry_prior(3, tf.ones([2, 4]), tf.zeros([4]), tf.ones([4, 2]),
    ...                    tf.zeros([2]))
    >>> p.shape
    TensorShape([2, 3, 3])
    """
    dtype = compute_dtype(hidden_kernel.dtype)
    # Computed transposed, `[h, k*k]` then `[G, k*k]`: the matmuls transpose
    # their operands for free, where a transpose op on the small result costs
    # about half a millisecond per layer on CPU (oneDNN sets up a primitive).
    offsets = tf.constant(window_offsets(kernel_size).T, dtype=dtype)
    hidden = tf.nn.relu(
        tf.matmul(tf.cast(hidden_kernel, dtype), offsets, transpose_a=True)
        + tf.cast(hidden_bias, dtype)[:, None]
    )
    per_group = tf.matmul(tf.cast(output_kernel, dtype), hidden, transpose_a=True) + tf.cast(
        output_bias, dtype
    )[:, None]
    return tf.reshape(per_group, [-1, kernel_size, kernel_size])


def compose(query, key, composability):
    """Appearance term Phi(q, key) of one window cell.

    Args:
        query: query values.
        key: key values, broadcastable against `query`.
        composability: "squared_difference" (`-(q - key)^2`), "dot"
            (`q * key`) or "abs_difference" (`-|q - key|`).

    Returns:
        Phi, the shape of `query - key`.

    Example:
    >>> compose(tf.constant(1.0), tf.constant(3.0), "squared_difference")
    <tf.Tensor: shape=(), dtype=float32, numpy=-4.0>
    """
    if composability == "squared_difference":
        return -tf.square(query - key)
    if composability == "dot":
        return query * key
    if composability == "abs_difference":
        return -tf.abs(query - key)
    checks.check_choice("composability", composability, COMPOSABILITIES)


def compose_partials(query, key, composability):
    """(dPhi/dq, dPhi/dkey) of `compose`."""
    if composability == "squared_difference":
        twice_difference = 2.0 * (query - key)
        return -twice_difference, twice_difference
    if composability == "dot":
        return key, query
    sign = tf.sign(query - key)
    return -sign, sign


def logits_of(window, query, keys, prior):
    """`scale * Phi(query, keys) + prior`: one cell's logits, or a stack of them."""
    return window.scale * compose(query, keys, window.composability) + prior


def validated_window(
    query, key, value, prior, strides, dilation_rate, composability, scale
):
    """Checks every argument of `local_relation`; returns its `Window`."""
    strides = checks.check_choice("strides", strides, STRIDES)
    dilation_rate = checks.check_positive_int("dilation_rate", dilation_rate)
    checks.check_choice("composability", composability, COMPOSABILITIES)
    query_shape = checks.check_rank(
        "query", query.shape, 4, "[batch, out_height, out_width, groups]"
    )
    key_shape = checks.check_rank(
        "key", key.shape, 4, "[batch, height, width, groups]"
    )
    value_shape = checks.check_rank(
        "value", value.shape, 4, "[batch, height, width, channels]"
    )
    prior_shape = checks.check_rank(
        "geometry_prior", prior.shape, 3, "[groups, kernel_size, kernel_size]"
    )
    groups, channels = key_shape[-1], value_shape[-1]
    if groups is None or channels is None:
        raise ValueError(
            "`key` and `value` need known channel dimensions; received "
            f"key shape {key_shape} and value shape {value_shape}."
        )
    if query_shape[-1] != groups or prior_shape[0] != groups:
        raise ValueError(
            f"`query`, `key` and `geometry_prior` must have the same number of "
            f"groups; received query shape {query_shape}, key shape "
            f"{key_shape}, geometry_prior shape {prior_shape}."
        )
    if channels % groups:
        raise ValueError(
            f"`value` channels must be a multiple of the {groups} groups; "
            f"received value shape {value_shape}."
        )
    if prior_shape[1] != prior_shape[2]:
        raise ValueError(
            "`geometry_prior` must be square [groups, k, k]; received shape "
            f"{prior_shape}."
        )
    kernel_size = checks.check_odd_positive_int(
        "geometry_prior kernel size", prior_shape[1]
    )
    _check_same_dims("key", key_shape, "value", value_shape, axes=(0, 1, 2))
    expected = tuple(
        None if size is None else output_size(size, strides)
        for size in value_shape[1:3]
    )
    _check_same_dims(
        "query", query_shape[:3],
        f"value (batch, ceil(H / {strides}), ceil(W / {strides}))",
        (value_shape[0],) + expected, axes=(0, 1, 2),
    )
    return Window(kernel_size, strides, dilation_rate, composability,
                  checks.check_finite_number("scale", scale))


def _check_same_dims(name, shape, other_name, other_shape, axes):
    for axis in axes:
        mine, theirs = shape[axis], other_shape[axis]
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(
                f"`{name}` shape {shape} does not match {other_name} shape "
                f"{other_shape} on axis {axis}."
            )
