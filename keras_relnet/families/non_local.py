"""The non-local family (non-local block): options, weights and forward."""

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

import keras

from keras_relnet.families.options import FamilyOptions
from keras_relnet.ops import checks
from keras_relnet.ops.context import NON_LOCAL_MODES, non_local_2d


@dataclasses.dataclass(frozen=True)
class NonLocalOptions(FamilyOptions):
    """Options of a non-local block (see `keras_relnet.layers.NonLocal2D`).

    Example:
    >>> NonLocalOptions(reduction=4).inner_channels(64)
    16
    """

    reduction: int = 2
    mode: str = "embedded_gaussian"
    sub_sample: bool = False
    use_scale: bool = True

    def normalised(self):
        return dict(reduction=checks.check_positive_int("reduction", self.reduction),
                    mode=checks.check_choice("mode", self.mode, NON_LOCAL_MODES),
                    sub_sample=bool(self.sub_sample), use_scale=bool(self.use_scale))

    def inner_channels(self, channels):
        """`C' = max(C // reduction, 1)`."""
        return max(channels // self.reduction, 1)


class NonLocalWeights(NamedTuple):
    """The weights of a non-local block: `(kernel, bias)` pairs of the 1x1
    projections (theta and phi None in "gaussian" mode) and the
    concatenation kernel (None unless "concatenation")."""

    theta: Optional[Tuple[Any, Any]]
    phi: Optional[Tuple[Any, Any]]
    g: Tuple[Any, Any]
    output: Tuple[Any, Any]
    concat_kernel: Any


def create_weights(add_weight, options, channels, kernel_regularizer=None):
    """Creates the weights of a non-local block with `add_weight`.

    theta, phi and g start from N(0, 0.01); the output projection W_z at
    zero, so the block starts as the identity.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        options: `NonLocalOptions`.
        channels: input channels.
        kernel_regularizer: regulariser of every kernel.

    Returns:
        `NonLocalWeights`.

    Example:
    >>> layer = keras.layers.Layer()
    >>> weights = create_weights(layer.add_weight, NonLocalOptions(mode="gaussian"), 8)
    >>> weights.theta is None, tuple(weights.g[0].shape)
    (True, (8, 4))
    """
    inner = options.inner_channels(channels)
    projection = keras.initializers.RandomNormal(stddev=0.01)

    def conv(name, shape, kernel_initializer):
        return (add_weight(name=f"{name}_kernel", shape=shape, initializer=kernel_initializer,
                           regularizer=kernel_regularizer),
                add_weight(name=f"{name}_bias", shape=shape[-1:], initializer="zeros"))

    theta = phi = concat_kernel = None
    if options.mode != "gaussian":
        theta = conv("theta", (channels, inner), projection)
        phi = conv("phi", (channels, inner), projection)
    g = conv("g", (channels, inner), projection)
    output = conv("output", (inner, channels), "zeros")
    if options.mode == "concatenation":
        concat_kernel = add_weight(name="concat_kernel", shape=(2 * inner,),
                                   initializer=projection, regularizer=kernel_regularizer)
    return NonLocalWeights(theta, phi, g, output, concat_kernel)


def forward(inputs, weights, options):
    """The non-local block of NHWC `inputs` (see `ops.non_local_2d`).

    Returns:
        `(outputs, pairwise weights [batch, H*W, L'])`.
    """
    pair = lambda weight: None if weight is None else tuple(weight)
    return non_local_2d(inputs, pair(weights.theta), pair(weights.phi), tuple(weights.g),
                        tuple(weights.output), mode=options.mode,
                        sub_sample=options.sub_sample, use_scale=options.use_scale,
                        concat_weights=weights.concat_kernel)
