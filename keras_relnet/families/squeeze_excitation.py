"""The squeeze-excitation family (SE block): options, weights and forward."""

import dataclasses
from typing import Any, NamedTuple

from keras_relnet.families.options import FamilyOptions, initializer_field
from keras_relnet.ops import checks
from keras_relnet.ops.context import squeeze_excitation


@dataclasses.dataclass(frozen=True)
class SqueezeExcitationOptions(FamilyOptions):
    """Options of an SE block (see `keras_relnet.layers.SqueezeExcitation`).

    Example:
    >>> SqueezeExcitationOptions(ratio=0.25).ratio
    0.25
    """

    ratio: float = 1 / 16
    kernel_initializer: Any = initializer_field("glorot_uniform")

    def normalised(self):
        return dict(ratio=checks.check_positive_number("ratio", self.ratio))


class SqueezeExcitationWeights(NamedTuple):
    """The weights of an SE block, the arguments of `ops.squeeze_excitation`."""

    kernel1: Any
    bias1: Any
    kernel2: Any
    bias2: Any


def create_weights(add_weight, options, channels, kernel_regularizer=None):
    """Creates the SE weights with `add_weight`.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        options: `SqueezeExcitationOptions`.
        channels: input channels.
        kernel_regularizer: regulariser of both kernels.

    Returns:
        `SqueezeExcitationWeights`.

    Example:
    >>> import keras
    >>> layer = keras.layers.Layer()
    >>> tuple(create_weights(layer.add_weight, SqueezeExcitationOptions(0.25), 8).kernel1.shape)
    (8, 2)
    """
    hidden = checks.checked_reduced_width(channels, options.ratio, "hidden units")
    kernel = dict(initializer=options.kernel_initializer, regularizer=kernel_regularizer)
    return SqueezeExcitationWeights(
        add_weight(name="kernel1", shape=(channels, hidden), **kernel),
        add_weight(name="bias1", shape=(hidden,), initializer="zeros"),
        add_weight(name="kernel2", shape=(hidden, channels), **kernel),
        add_weight(name="bias2", shape=(channels,), initializer="zeros"),
    )


def forward(inputs, weights, options):
    """The SE block of NHWC `inputs` (see `ops.squeeze_excitation`)."""
    del options  # the ratio only sets the weights' shapes
    return squeeze_excitation(inputs, *weights)
