"""The global context family (GC block, simplified non-local): options, weights, forward."""

import dataclasses
from typing import Any, NamedTuple, Tuple

import keras

from keras_relnet.families.options import FamilyOptions, initializer_field
from keras_relnet.ops import checks
from keras_relnet.ops.context import FUSIONS, POOLINGS, TRANSFORMS, global_context


@dataclasses.dataclass(frozen=True)
class GlobalContextOptions(FamilyOptions):
    """Options of a GC block (see `keras_relnet.layers.GlobalContext`).

    Example:
    >>> GlobalContextOptions(fusion="multiply").fusion
    ('multiply',)
    """

    ratio: float = 1 / 16
    pooling: str = "attention"
    fusion: Tuple[str, ...] = ("add",)
    transform: str = "bottleneck"
    kernel_initializer: Any = initializer_field("glorot_uniform")

    def normalised(self):
        fusion = (self.fusion,) if isinstance(self.fusion, str) else tuple(self.fusion)
        if not fusion or len(set(fusion)) != len(fusion):
            raise ValueError("`fusion` must be a non-empty sequence of distinct values from "
                             f"{list(FUSIONS)}; received {self.fusion!r}.")
        return dict(
            ratio=checks.check_positive_number("ratio", self.ratio),
            pooling=checks.check_choice("pooling", self.pooling, POOLINGS),
            fusion=tuple(checks.check_choice("fusion", kind, FUSIONS) for kind in fusion),
            transform=checks.check_choice("transform", self.transform, TRANSFORMS),
        )


class GlobalContextWeights(NamedTuple):
    """The weights of a GC block, the arguments of `ops.global_context`."""

    pooling: Tuple[Any, ...]
    transforms: Any


def create_weights(add_weight, options, channels, kernel_regularizer=None):
    """Creates the weights of a GC-family block with `add_weight`.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        options: `GlobalContextOptions`.
        channels: input channels.
        kernel_regularizer: regulariser of the attention and transform kernels.

    Returns:
        `GlobalContextWeights`: the attention pooling `(kernel, bias)` (empty
        with average pooling) and the transforms by fusion kind.

    Example:
    >>> layer = keras.layers.Layer()
    >>> weights = create_weights(layer.add_weight, GlobalContextOptions(ratio=1 / 4), 8)
    >>> tuple(weights.transforms["add"][0].shape)
    (8, 2)
    """
    pooling = ()
    if options.pooling == "attention":
        pooling = (
            add_weight(name="attention_kernel", shape=(channels, 1),
                       initializer=keras.initializers.VarianceScaling(
                           2.0, "fan_in", "untruncated_normal"),
                       regularizer=kernel_regularizer),
            add_weight(name="attention_bias", shape=(1,), initializer="zeros"),
        )
    transforms = {}
    for kind in options.fusion:
        def weight(name, shape, initializer, kernel=False, kind=kind):
            return add_weight(name=f"{kind}_{name}", shape=shape, initializer=initializer,
                              regularizer=kernel_regularizer if kernel else None)

        if options.transform == "linear":
            transforms[kind] = (weight("kernel", (channels, channels), "zeros", kernel=True),
                                weight("bias", (channels,), "zeros"))
            continue
        width = checks.checked_reduced_width(channels, options.ratio, "channels")
        transforms[kind] = (
            weight("kernel1", (channels, width), options.kernel_initializer, kernel=True),
            weight("bias1", (width,), "zeros"),
            weight("norm_gamma", (width,), "ones"),
            weight("norm_beta", (width,), "zeros"),
            weight("kernel2", (width, channels), "zeros", kernel=True),
            weight("bias2", (channels,), "zeros"),
        )
    return GlobalContextWeights(pooling, transforms)


def forward(inputs, weights, options):
    """The GC block of NHWC `inputs` (see `ops.global_context`).

    Returns:
        `(outputs, attention)`: attention `[batch, height, width]`, or None
        with average pooling.
    """
    return global_context(inputs, tuple(weights.pooling), dict(weights.transforms),
                          options.pooling, options.transform)


SIMPLIFIED_NON_LOCAL_FIXED = dict(ratio=1 / 16, pooling="attention", fusion=("add",),
                                  transform="linear", kernel_initializer="glorot_uniform")


def simplified_non_local_options(arguments):
    """The GC options of a simplified non-local block; it fixes all of them.

    Args:
        arguments: the block's keyword arguments (none may be a GC option).

    Returns:
        `GlobalContextOptions` with attention pooling, add fusion and the
        linear transform.

    Example:
    >>> simplified_non_local_options({"pooling": "average"})
    Traceback (most recent call last):
    ...
    ValueError: SimplifiedNonLocal2D fixes ['fusion', 'kernel_initializer', 'pooling', 'ratio', 'transform']; received ['pooling']. Use GlobalContext to choose them.
    """
    fixed = sorted(set(arguments) & set(SIMPLIFIED_NON_LOCAL_FIXED))
    if fixed:
        raise ValueError(f"SimplifiedNonLocal2D fixes {sorted(SIMPLIFIED_NON_LOCAL_FIXED)}; "
                         f"received {fixed}. Use GlobalContext to choose them.")
    return GlobalContextOptions(**SIMPLIFIED_NON_LOCAL_FIXED)
