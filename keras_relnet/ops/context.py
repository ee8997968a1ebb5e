"""Global context family: GC block, simplified non-local, non-local, squeeze-excitation.

The math of the global-context layers (Cao et al., GCNet 2019; Wang et al.,
Non-local Neural Networks, CVPR 2018; Hu et al., SE-Net, CVPR 2018). Spec:
`docs/global_context.md`. Layout is NHWC, `L = H * W`.

Every softmax and normalisation statistic runs in float32 for float16/bfloat16
inputs; results come back in the input dtype.
"""

import tensorflow as tf

from keras_relnet.ops.context_pooling import add_context, attention_pool, average_pool
from keras_relnet.ops.precision import at_least_float32

POOLINGS = ("attention", "average")
FUSIONS = ("add", "multiply")
TRANSFORMS = ("bottleneck", "linear")
NON_LOCAL_MODES = ("embedded_gaussian", "dot_product", "gaussian", "concatenation")


def dense(inputs, kernel, bias=None):
    """`inputs @ kernel + bias` over the last axis (a 1x1 convolution).

    Args:
        inputs: `[..., C_in]`.
        kernel: `[C_in, C_out]`.
        bias: `[C_out]` or None.

    Returns:
        `[..., C_out]`.

    Example:
    >>> dense(tf.ones([2, 3]), tf.ones([3, 4]), tf.ones([4])).shape
    TensorShape([2, 4])
    """
    kernel = tf.cast(kernel, inputs.dtype)
    if inputs.shape.rank == 2:
        outputs = tf.matmul(inputs, kernel)
    else:
        outputs = tf.tensordot(inputs, kernel, axes=[[-1], [0]])
        outputs.set_shape(inputs.shape[:-1].concatenate(kernel.shape[-1:]))
    if bias is not None:
        outputs += tf.cast(bias, inputs.dtype)
    return outputs


def layer_norm(inputs, gamma, beta, epsilon=1e-5):
    """LayerNorm over the last axis, statistics in float32.

    Args:
        inputs: `[..., P]`.
        gamma: `[P]` scale.
        beta: `[P]` offset.
        epsilon: variance floor.

    Returns:
        The normalised `[..., P]`, in the input dtype.

    Example:
    >>> layer_norm(tf.constant([[1.0, 3.0]]), tf.ones([2]), tf.zeros([2])).numpy()
    array([[-0.999995,  0.999995]], dtype=float32)
    """
    values = at_least_float32(inputs)
    mean, variance = tf.nn.moments(values, axes=[-1], keepdims=True)
    normalised = (values - mean) * tf.math.rsqrt(variance + epsilon)
    normalised = normalised * at_least_float32(gamma) + at_least_float32(beta)
    return tf.cast(normalised, inputs.dtype)


def context_transform(context, weights, transform):
    """Transforms a pooled context `[B, C]` back to C channels.

    Args:
        context: `[B, C]`.
        weights: "bottleneck": `(kernel1 [C, P], bias1, gamma [P], beta [P],
            kernel2 [P, C], bias2)` for Dense -> LayerNorm -> ReLU -> Dense;
            "linear": `(kernel [C, C], bias)`.
        transform: "bottleneck" or "linear".

    Returns:
        `[B, C]`.

    Example:
    >>> context_transform(tf.ones([1, 2]), (tf.eye(2), tf.zeros([2])), "linear").numpy()
    array([[1., 1.]], dtype=float32)
    """
    if transform == "linear":
        kernel, bias = weights
        return dense(context, kernel, bias)
    kernel1, bias1, gamma, beta, kernel2, bias2 = weights
    hidden = tf.nn.relu(layer_norm(dense(context, kernel1, bias1), gamma, beta))
    return dense(hidden, kernel2, bias2)


def fuse(inputs, add=None, multiply=None):
    """Fuses transformed contexts `[B, C]` into `[B, H, W, C]` features.

    `out = x`; with multiply `out = out * sigmoid(multiply)`; then with add
    `out = out + add`, broadcast over H and W.

    Args:
        inputs: `[B, H, W, C]`.
        add: `[B, C]` or None.
        multiply: `[B, C]` or None.

    Returns:
        `[B, H, W, C]`.

    Example:
    >>> fuse(tf.ones([1, 1, 1, 2]), add=tf.ones([1, 2])).numpy().ravel()
    array([2., 2.], dtype=float32)
    """
    outputs = inputs
    if multiply is not None:
        outputs = outputs * tf.expand_dims(tf.expand_dims(tf.sigmoid(multiply), 1), 1)
    if add is not None:
        outputs = add_context(outputs, add)
    return outputs


def global_context(inputs, pooling_weights, transforms, pooling="attention",
                   transform="bottleneck"):
    """The GC block (SNL with `transform="linear"`), and its attention weights.

    Args:
        inputs: `[B, H, W, C]`.
        pooling_weights: `(kernel [C, 1], bias [1])` of the attention logits
            (ignored for average pooling).
        transforms: `{"add": weights, "multiply": weights}`, the fusions to
            apply, each with `context_transform` weights.
        pooling: "attention" or "average".
        transform: "bottleneck" or "linear".

    Returns:
        `(outputs [B, H, W, C], attention [B, H, W] or None)`.

    Example:
    >>> x = tf.ones([1, 3, 3, 2])
    >>> add = (tf.zeros([2, 2]), tf.zeros([2]))
    >>> y, a = global_context(x, (tf.ones([2, 1]), tf.zeros([1])), {"add": add},
    ...                       transform="linear")
    >>> float(tf.reduce_max(tf.abs(y - x)))
    0.0
    """
    attention = None
    if pooling == "attention":
        context, attention = attention_pool(inputs, *pooling_weights)
    else:
        context = average_pool(inputs)
    fused = {
        kind: context_transform(context, weights, transform)
        for kind, weights in transforms.items()
    }
    return fuse(inputs, add=fused.get("add"), multiply=fused.get("multiply")), attention


def squeeze_excitation(inputs, kernel1, bias1, kernel2, bias2):
    """SE: `x * sigmoid(W2 relu(W1 GAP(x) + b1) + b2)`.

    Args:
        inputs: `[B, H, W, C]`.
        kernel1: `[C, C/r]`; bias1: `[C/r]`.
        kernel2: `[C/r, C]`; bias2: `[C]`.

    Returns:
        `[B, H, W, C]`.

    Example:
    >>> squeeze_excitation(tf.ones([1, 1, 1, 2]), tf.zeros([2, 1]), tf.zeros([1]),
    ...                    tf.zeros([1, 2]), tf.zeros([2])).numpy().ravel()
    array([0.5, 0.5], dtype=float32)
    """
    hidden = tf.nn.relu(dense(average_pool(inputs), kernel1, bias1))
    return fuse(inputs, multiply=dense(hidden, kernel2, bias2))


def non_local_pairwise(theta, phi, mode, use_scale=True, concat_weights=None):
    """Pairwise function f of the non-local block, in float32.

    Args:
        theta: `[B, L, C']` queries (x itself in "gaussian" mode).
        phi: `[B, L', C']` keys.
        mode: "embedded_gaussian" `softmax_j(theta_i . phi_j / sqrt(C'))`
            (without `/ sqrt(C')` when `use_scale` is False), "dot_product"
            `theta_i . phi_j / L'`, "gaussian" `softmax_j(x_i . x_j)`, or
            "concatenation" `relu(w1 . theta_i + w2 . phi_j) / L'`.
        use_scale: divide embedded-gaussian logits by `sqrt(C')`.
        concat_weights: `[2 C']`, `(w1, w2)` stacked, for "concatenation".

    Returns:
        `[B, L, L']` float32 weights.

    Example:
    >>> f = non_local_pairwise(tf.ones([1, 4, 2]), tf.ones([1, 3, 2]), "dot_product")
    >>> round(float(f[0, 0, 0]), 4)
    0.6667
    """
    theta, phi = at_least_float32(theta), at_least_float32(phi)
    keys = tf.cast(tf.shape(phi)[1], theta.dtype)
    if mode == "concatenation":
        w = at_least_float32(concat_weights)
        width = theta.shape[-1]
        query_term = tf.linalg.matvec(theta, w[:width])
        key_term = tf.linalg.matvec(phi, w[width:])
        return tf.nn.relu(tf.expand_dims(query_term, 2) + tf.expand_dims(key_term, 1)) / keys
    logits = tf.matmul(theta, phi, transpose_b=True)
    if mode == "dot_product":
        return logits / keys
    if mode == "embedded_gaussian" and use_scale:
        logits = logits / tf.sqrt(tf.cast(theta.shape[-1], theta.dtype))
    return tf.nn.softmax(logits, axis=-1)


def _half_resolution(tensor):
    """2x2 max pooling with stride 2; a size-1 axis is padded to 2 with the
    dtype's lowest value first, so it keeps its one row or column."""
    missing = tf.maximum(2 - tf.shape(tensor)[1:3], 0)
    padded = tf.pad(tensor, [[0, 0], [0, missing[0]], [0, missing[1]], [0, 0]],
                    constant_values=tensor.dtype.min)
    return tf.nn.max_pool2d(padded, 2, 2, "VALID")


def non_local_2d(inputs, theta_weights, phi_weights, g_weights, output_weights,
                 mode="embedded_gaussian", sub_sample=False, use_scale=True,
                 concat_weights=None):
    """The non-local block `z = x + W_z(f(theta, phi) @ g)` and its weights f.

    Args:
        inputs: `[B, H, W, C]`.
        theta_weights, phi_weights: `(kernel [C, C'], bias)` or None in
            "gaussian" mode (theta = phi = x).
        g_weights: `(kernel [C, C'], bias)`.
        output_weights: `(kernel [C', C], bias)` of W_z.
        mode, use_scale, concat_weights: as in `non_local_pairwise`.
        sub_sample: 2x2 max pooling (stride 2, the remainder row/column
            dropped, as in the reference) of phi and g; an axis of size 1 is
            kept as it is.

    Returns:
        `(outputs [B, H, W, C], weights [B, H*W, L'])`.

    Example:
    >>> x = tf.ones([1, 2, 2, 2])
    >>> w = (tf.ones([2, 1]), tf.zeros([1]))
    >>> z, f = non_local_2d(x, w, w, w, (tf.zeros([1, 2]), tf.zeros([2])))
    >>> f.shape
    TensorShape([1, 4, 4])
    """
    pool = _half_resolution if sub_sample else (lambda t: t)
    if mode == "gaussian":
        theta, phi = inputs, pool(inputs)
    else:
        theta, phi = dense(inputs, *theta_weights), pool(dense(inputs, *phi_weights))
    g = pool(dense(inputs, *g_weights))
    batch = tf.shape(inputs)[0]
    flat = lambda t: tf.reshape(t, [batch, -1, t.shape[-1]])
    weights = non_local_pairwise(flat(theta), flat(phi), mode, use_scale, concat_weights)
    aggregated = tf.cast(tf.matmul(weights, at_least_float32(flat(g))), inputs.dtype)
    aggregated = tf.reshape(aggregated, tf.concat([tf.shape(inputs)[:3], [-1]], 0))
    return inputs + dense(aggregated, *output_weights), weights
