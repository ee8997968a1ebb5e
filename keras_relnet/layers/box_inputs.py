"""Base class of layers that take boxes next to features."""

import keras
import tensorflow as tf


class BoxInputLayer(keras.layers.Layer):
    """A layer whose positional inputs include boxes that must keep their dtype.

    Keras casts every floating input to the compute dtype; under
    `mixed_float16` that would round pixel coordinates near 1000 to 0.5 px.
    Subclasses turn that off and cast their feature inputs themselves.

    Example:
    >>> class Corners(BoxInputLayer):
    ...     def call(self, features, boxes):
    ...         return boxes[..., :2]
    >>> Corners()(tf.ones([1, 2, 3]), tf.ones([1, 2, 4], tf.float64)).dtype
    tf.float64
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._convert_input_args = False

    def __call__(self, *args, **kwargs):
        # With input conversion off, Keras accepts only tensors positionally.
        return super().__call__(*[_as_tensor(arg) for arg in args], **kwargs)


def _as_tensor(value):
    if value is None or keras.ops.is_tensor(value) or isinstance(value, keras.KerasTensor):
        return value
    return tf.convert_to_tensor(value)
