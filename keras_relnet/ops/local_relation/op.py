"""The public local relation ops: the aggregation and the whole layer."""

import tensorflow as tf

from keras_relnet.ops import checks, placement
from keras_relnet.ops.local_relation import kernel
from keras_relnet.ops.local_relation.dispatch import resolve_implementation
from keras_relnet.ops.local_relation.drivers import traced_relation, xla_relation
from keras_relnet.ops.local_relation.export_forward import export_relation
from keras_relnet.ops.local_relation.window import STRIDES, geometry_prior, validated_window
from keras_relnet.ops.portable import portable_graphs_requested


def local_relation_aggregation(
    query,
    key,
    value,
    geometry_prior,
    *,
    strides=1,
    dilation_rate=1,
    composability="squared_difference",
    scale=1.0,
    implementation="auto",
):
    """Local relation aggregation over k x k windows (the layer's core).

    Computes `y = sum_cells softmax(scale * Phi(q, key) + prior) * value`
    per output pixel and channel group, with off-image cells masked out
    exactly. Softmax and accumulation run in float32 for float16/bfloat16
    inputs (float64 stays float64); the output has the dtype of `value`.

    Args:
        query: `[B, Ho, Wo, G]`, the query at the window centres
            (`Ho = ceil(H / strides)`).
        key: `[B, H, W, G]`.
        value: `[B, H, W, C]` with `C % G == 0`; channel `c` is in group
            `c // (C // G)`.
        geometry_prior: `[G, k, k]` with odd k.
        strides: 1 or 2; output pixel (i, j) centres on input `(s*i, s*j)`.
        dilation_rate: spacing of the window cells.
        composability: one of `COMPOSABILITIES`.
        scale: multiplier of the appearance term.
        implementation: "reference", "xla", "custom" (the compiled kernel)
            or "auto" (`ops.local_relation.dispatch` holds the policy;
            `ops.explain()` says what runs and why).

    Returns:
        `[B, Ho, Wo, C]`.

    Example:
    >>> x = tf.random.normal([1, 5, 5, 4])
    >>> q = tf.random.normal([1, 5, 5, 2])
    >>> y = local_relation_aggregation(q, q, x, tf.zeros([2, 3, 3]))
    >>> y.shape
    TensorShape([1, 5, 5, 4])
    """
    window = validated_window(
        query, key, value, geometry_prior, strides, dilation_rate,
        composability, scale,
    )
    if portable_graphs_requested():  # exporting: plain ops only, no XLA, no custom kernel
        return export_relation(window)(query, key, value, geometry_prior)
    name, _ = resolve_implementation(implementation, value.dtype,
                                     value.shape[-1] // key.shape[-1], window.kernel_size)
    if name == "custom":
        return kernel.fused_local_relation(
            query, key, value, geometry_prior, window.strides, window.dilation_rate,
            window.composability, window.scale)
    if name == "xla":
        relation = xla_relation(window)
    else:
        # XLA cannot slice at a loop-dependent offset: inside a jit-compiled
        # graph (e.g. `model.compile(jit_compile=True)`) the reference formula
        # runs with the static driver, which XLA compiles.
        relation = traced_relation(window, unrolled=placement.in_xla_context())
    return relation(query, key, value, geometry_prior)


def local_relation_2d(
    inputs,
    query_kernel,
    key_kernel,
    value_kernel,
    geometry_weights,
    *,
    kernel_size,
    strides=1,
    dilation_rate=1,
    composability="squared_difference",
    scale=1.0,
    implementation="auto",
):
    """The whole local relation layer: projections, prior and aggregation.

    Query `x[:, ::s, ::s] @ query_kernel`, key `x @ key_kernel`, value
    `x @ value_kernel` (or `x` when `value_kernel` is None), prior from
    `geometry_weights`, then `local_relation_aggregation`.

    Args:
        inputs: `[B, H, W, C]`.
        query_kernel: `[C, G]` (1x1 convolution).
        key_kernel: `[C, G]`.
        value_kernel: `[C, C]` or None (no value projection).
        geometry_weights: `(hidden_kernel, hidden_bias, output_kernel,
            output_bias)` of the prior MLP, see `geometry_prior`.
        kernel_size: odd window size k.
        strides, dilation_rate, composability, scale, implementation: as in
            `local_relation_aggregation`.

    Returns:
        `[B, ceil(H / s), ceil(W / s), C]`.

    Example:
    >>> x = tf.random.normal([1, 6, 6, 8])
    >>> g = (tf.ones([2, 8]), tf.zeros([8]), tf.ones([8, 2]), tf.zeros([2]))
    >>> y = local_relation_2d(x, tf.ones([8, 2]), tf.ones([8, 2]), None, g,
    ...                       kernel_size=3, strides=2)
    >>> y.shape
    TensorShape([1, 3, 3, 8])
    """
    strides = checks.check_choice("strides", strides, STRIDES)
    query = pointwise_projection(inputs, query_kernel, strides)
    key = pointwise_projection(inputs, key_kernel)
    value = inputs if value_kernel is None else pointwise_projection(inputs, value_kernel)
    prior = geometry_prior(kernel_size, *geometry_weights)
    return local_relation_aggregation(
        query, key, value, prior,
        strides=strides, dilation_rate=dilation_rate,
        composability=composability, scale=scale,
        implementation=implementation,
    )


def pointwise_projection(inputs, kernel, strides=1):
    """`inputs @ kernel` at every `strides`-th pixel: a 1x1 convolution.

    A strided 1x1 convolution reads only the window centres; slicing the
    centres out first would copy them, which costs more than the projection.

    Args:
        inputs: `[B, H, W, C]`.
        kernel: `[C, D]`.
        strides: 1 or 2; pixel (i, j) of the result is input `(s*i, s*j)`.

    Returns:
        `[B, ceil(H / strides), ceil(W / strides), D]`.

    Example:
    >>> pointwise_projection(tf.ones([1, 5, 5, 3]), tf.ones([3, 2]), 2).shape
    TensorShape([1, 3, 3, 2])
    """
    return tf.nn.conv2d(inputs, kernel[None, None], strides, "VALID")
