"""The local relation family (LR-Net): options, weights and forward."""

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

from keras_relnet.families.options import FamilyOptions, initializer_field
from keras_relnet.ops import checks
from keras_relnet.ops.local_relation import dispatch as local_relation_dispatch
from keras_relnet.ops.local_relation import (
    COMPOSABILITIES,
    STRIDES,
    local_relation_2d,
    output_size,
)


@dataclasses.dataclass(frozen=True)
class LocalRelationOptions(FamilyOptions):
    """Options of a local relation layer (see `keras_relnet.layers.LocalRelation2D`).

    Example:
    >>> LocalRelationOptions(kernel_size=3, channels_per_group=4).groups(16)
    4
    """

    kernel_size: int = 7
    channels_per_group: int = 8
    strides: int = 1
    dilation_rate: int = 1
    composability: str = "squared_difference"
    value_projection: bool = True
    geometry_hidden_units: Optional[int] = None
    scale: float = 1.0
    implementation: str = "auto"
    kernel_initializer: Any = initializer_field("glorot_uniform")
    geometry_initializer: Any = initializer_field("glorot_uniform")

    def normalised(self):
        hidden = self.geometry_hidden_units
        return dict(
            kernel_size=checks.check_odd_positive_int("kernel_size", self.kernel_size),
            channels_per_group=checks.check_positive_int("channels_per_group",
                                                         self.channels_per_group),
            strides=checks.check_choice("strides", self.strides, STRIDES),
            dilation_rate=checks.check_positive_int("dilation_rate", self.dilation_rate),
            composability=checks.check_choice("composability", self.composability,
                                              COMPOSABILITIES),
            value_projection=bool(self.value_projection),
            geometry_hidden_units=(None if hidden is None else
                                   checks.check_positive_int("geometry_hidden_units", hidden)),
            scale=checks.check_finite_number("scale", self.scale),
            implementation=checks.check_choice("implementation", self.implementation,
                                               local_relation_dispatch.IMPLEMENTATIONS),
        )

    def groups(self, channels, input_shape=None):
        """`G = channels / m`; a `ValueError` when m does not divide the channels.

        Args:
            channels: the input channels.
            input_shape: the received input shape, for the message.
        """
        if channels % self.channels_per_group:
            received = f"shape {tuple(input_shape)}" if input_shape is not None else channels
            raise ValueError(
                f"`inputs` channels ({channels}) must be divisible by `channels_per_group` "
                f"({self.channels_per_group}); received {received}.")
        return channels // self.channels_per_group

    def output_spatial_size(self, size):
        """The output height (or width) of an input height (None stays None)."""
        return None if size is None else output_size(size, self.strides)


class LocalRelationWeights(NamedTuple):
    """The weights of a local relation layer, the arguments of `ops.local_relation_2d`."""

    query_kernel: Any
    key_kernel: Any
    value_kernel: Any
    geometry: Tuple[Any, Any, Any, Any]


def create_weights(add_weight, options, channels, kernel_regularizer=None):
    """Creates the weights of a local relation layer with `add_weight`.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        options: `LocalRelationOptions`.
        channels: input channels (divisible by `options.channels_per_group`).
        kernel_regularizer: regulariser of the query, key and value kernels.

    Returns:
        `LocalRelationWeights`; the geometry prior is `(hidden_kernel,
        hidden_bias, output_kernel, output_bias)`.

    Example:
    >>> import keras
    >>> layer = keras.layers.Layer()
    >>> weights = create_weights(layer.add_weight, LocalRelationOptions(channels_per_group=4), 8)
    >>> tuple(weights.query_kernel.shape), tuple(weights.geometry[2].shape)
    ((8, 2), (8, 2))
    """
    groups = options.groups(channels)
    hidden = options.geometry_hidden_units or max(groups, 8)
    projection = dict(initializer=options.kernel_initializer, regularizer=kernel_regularizer)
    query = add_weight(name="query_kernel", shape=(channels, groups), **projection)
    key = add_weight(name="key_kernel", shape=(channels, groups), **projection)
    value = (add_weight(name="value_kernel", shape=(channels, channels), **projection)
             if options.value_projection else None)
    geometry = (
        add_weight(name="geometry_hidden_kernel", shape=(2, hidden),
                   initializer=options.geometry_initializer),
        add_weight(name="geometry_hidden_bias", shape=(hidden,), initializer="zeros"),
        add_weight(name="geometry_output_kernel", shape=(hidden, groups),
                   initializer=options.geometry_initializer),
        add_weight(name="geometry_output_bias", shape=(groups,), initializer="zeros"),
    )
    return LocalRelationWeights(query, key, value, geometry)


def forward(inputs, weights, options):
    """The local relation of NHWC `inputs` (see `ops.local_relation_2d`).

    Args:
        inputs: `[batch, height, width, channels]`.
        weights: `LocalRelationWeights`.
        options: `LocalRelationOptions`.

    Returns:
        `[batch, ceil(height / strides), ceil(width / strides), channels]`.
    """
    return local_relation_2d(
        inputs, weights.query_kernel, weights.key_kernel, weights.value_kernel,
        tuple(weights.geometry), kernel_size=options.kernel_size, strides=options.strides,
        dilation_rate=options.dilation_rate, composability=options.composability,
        scale=options.scale, implementation=options.implementation)
