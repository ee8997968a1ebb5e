"""Pooling a feature map into one context vector per image, and adding one back.

These are the only full-size passes of a GC block, and its cost is memory
traffic, not arithmetic. So both carry hand-written gradients: every sum over
positions is a matrix product (half the time of `reduce_sum` on CPU), and the
two outer products of the attention-pooling backward (through the weights and
through the logits) are merged into one rank-2 product. Against autodiff this
takes 26-43% off a GC block's forward+backward time on CPU (`docs/benchmarks.md`, "Context blocks").
"""

import tensorflow as tf

from keras_relnet.ops.precision import at_least_float32


def attention_pool(inputs, kernel, bias):
    """Context by attention pooling: `sum_l softmax_l(x[l] . kernel + bias) x[l]`.

    Logits, softmax and the weighted sum run in float32 for float16/bfloat16.

    Args:
        inputs: `[B, H, W, C]`.
        kernel: `[C, 1]`, the attention-logit projection (a 1x1 convolution).
        bias: `[1]`, its bias (it cannot change the softmax; it has a zero gradient).

    Returns:
        `(context [B, C] in the input dtype, weights [B, H, W] float32)`; the
        weights sum to 1 per image.

    Example:
    >>> context, weights = attention_pool(tf.ones([1, 2, 2, 3]), tf.zeros([3, 1]),
    ...                                   tf.zeros([1]))
    >>> context.numpy()
    array([[1., 1., 1.]], dtype=float32)
    """
    values = at_least_float32(inputs)
    context, weights = _attention_pool(
        values, _as_tensor(kernel, values.dtype), _as_tensor(bias, values.dtype)
    )
    return tf.cast(context, inputs.dtype), tf.reshape(weights, tf.shape(inputs)[:3])


def average_pool(inputs):
    """Context by global average pooling over H and W (accumulated in float32).

    Args:
        inputs: `[B, H, W, C]`.

    Returns:
        `[B, C]`.

    Example:
    >>> average_pool(tf.reshape(tf.range(4.0), [1, 2, 2, 1])).numpy()
    array([[1.5]], dtype=float32)
    """
    return tf.cast(tf.reduce_mean(at_least_float32(inputs), axis=[1, 2]), inputs.dtype)


def add_context(inputs, context):
    """`inputs + context`, one context vector per image broadcast over H and W.

    Args:
        inputs: `[B, H, W, C]`.
        context: `[B, C]`.

    Returns:
        `[B, H, W, C]`.

    Example:
    >>> add_context(tf.ones([1, 1, 2, 2]), tf.constant([[1.0, 2.0]])).numpy()[0, 0]
    array([[2., 3.],
           [2., 3.]], dtype=float32)
    """
    return _add_context(inputs, _as_tensor(context, inputs.dtype))


def sum_over_positions(inputs):
    """`inputs [B, ..., C]` summed over every axis but the first and the last.

    Args:
        inputs: `[B, ..., C]`.

    Returns:
        `[B, C]` in the input dtype, accumulated in at least float32.

    Example:
    >>> sum_over_positions(tf.ones([2, 3, 4, 5])).shape
    TensorShape([2, 5])
    """
    values = at_least_float32(inputs)
    per_image = tf.reshape(values, [tf.shape(values)[0], -1, values.shape[-1]])
    ones = tf.expand_dims(tf.ones_like(per_image[:, :, 0]), 1)
    return tf.cast(tf.matmul(ones, per_image)[:, 0], inputs.dtype)


def _as_tensor(value, dtype):
    # A tf.Variable handed to tf.custom_gradient is captured instead of
    # differentiated, so weights enter as plain tensors.
    return tf.cast(tf.convert_to_tensor(value), dtype)


@tf.custom_gradient
def _attention_pool(values, kernel, bias):
    batch, channels = tf.shape(values)[0], values.shape[-1]
    rows = tf.reshape(values, [-1, channels])
    per_image = tf.reshape(values, [batch, -1, channels])
    weights = tf.nn.softmax(tf.reshape(tf.matmul(rows, kernel), [batch, -1]) + bias)
    context = tf.matmul(tf.expand_dims(weights, 1), per_image)[:, 0]

    def grad(d_context, d_weights):
        # d context / d logit_l = w_l (x_l - context): a softmax backward of the
        # scores x_l . d_context (plus any gradient arriving at the weights).
        scores = tf.matmul(per_image, d_context[:, :, None])[:, :, 0]
        if d_weights is not None:
            scores += d_weights
        d_logits = weights * (scores - tf.reduce_sum(weights * scores, -1, keepdims=True))
        # d x_l = w_l d_context + d_logit_l kernel, as one product of rank 2.
        left = tf.stack([weights, d_logits], axis=-1)
        right = tf.stack([d_context, tf.broadcast_to(kernel[:, 0], tf.shape(d_context))], 1)
        d_values = tf.reshape(tf.matmul(left, right), tf.shape(values))
        d_kernel = tf.matmul(rows, tf.reshape(d_logits, [-1, 1]), transpose_a=True)
        return d_values, d_kernel, tf.zeros_like(bias)

    return (context, weights), grad


@tf.custom_gradient
def _add_context(inputs, context):
    def grad(d_outputs):
        return d_outputs, sum_over_positions(d_outputs)

    return inputs + tf.expand_dims(tf.expand_dims(context, 1), 1), grad
