"""The precision rule every op follows: softmax, normalisation and
accumulation run in at least float32 (float64 stays float64)."""

import tensorflow as tf


def compute_dtype(dtype):
    """The dtype an op computes in for inputs of `dtype`.

    Args:
        dtype: the input dtype.

    Returns:
        `tf.float64` for float64 inputs, else `tf.float32`.

    Example:
    >>> compute_dtype(tf.bfloat16)
    tf.float32
    """
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def at_least_float32(tensor):
    """`tensor` cast to `compute_dtype(tensor.dtype)`.

    Args:
        tensor: any floating tensor.

    Returns:
        The tensor in float32 (float64 stays float64).

    Example:
    >>> at_least_float32(tf.ones([2], tf.float16)).dtype
    tf.float32
    """
    return tf.cast(tensor, compute_dtype(tensor.dtype))
