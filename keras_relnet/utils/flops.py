"""Analytic multiply-add counter for Keras models.

"FLOPs" in the papers this library follows (ResNet's 4.1G, LR-Net's 4.3G)
are multiply-adds of one forward pass for one image; this counter uses the
same convention: convolutions, dense layers and relation layers count, while
normalisation, activations, pooling and additions (a few percent at most) do
not.
"""

import math

import keras

from keras_relnet.layers.local_relation import LocalRelation2D
from keras_relnet.ops.local_relation import output_size


def count_flops(model):
    """Multiply-adds of one forward pass of `model` for one example.

    Args:
        model: a built functional or sequential `keras.Model` whose spatial
            input sizes are known (nested models are counted recursively).

    Returns:
        The multiply-add count as an int.

    Example:
    >>> from keras_relnet.applications import LRNet50
    >>> round(count_flops(LRNet50()) / 1e9, 1)
    4.5
    """
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += count_flops(layer)
            continue
        counter = _counter_for(layer)
        if counter is not None:
            total += counter(layer, layer.input.shape, layer.output.shape)
    return total


def _counter_for(layer):
    for layer_type, counter in _COUNTERS:
        if isinstance(layer, layer_type):
            return counter
    return None


def _known(shape, layer):
    if any(size is None for size in shape[1:]):
        raise ValueError(
            f"count_flops needs known input sizes; layer '{layer.name}' has "
            f"shape {tuple(shape)}. Build the model with a concrete input_shape."
        )
    return shape


def _convolution(layer, input_shape, output_shape):
    _known(output_shape, layer)
    in_channels = input_shape[-1]
    window = math.prod(layer.kernel_size)
    positions = math.prod(output_shape[1:-1])
    return positions * window * in_channels // layer.groups * output_shape[-1]


def _depthwise_convolution(layer, input_shape, output_shape):
    _known(output_shape, layer)
    return math.prod(output_shape[1:]) * math.prod(layer.kernel_size)


def _dense(layer, input_shape, output_shape):
    _known(output_shape, layer)
    return math.prod(output_shape[1:]) * input_shape[-1]


def _local_relation(layer, input_shape, output_shape):
    _known(input_shape, layer)
    return local_relation_flops(
        input_shape[1:3],
        input_shape[-1],
        layer.channels_per_group,
        layer.kernel_size,
        layer.strides,
        layer.value_projection,
        layer.geometry_hidden_units,
    )


_COUNTERS = (
    (LocalRelation2D, _local_relation),
    (keras.layers.DepthwiseConv2D, _depthwise_convolution),
    (keras.layers.Conv2D, _convolution),
    (keras.layers.Dense, _dense),
)


def local_relation_flops(
    input_size,
    channels,
    channels_per_group,
    kernel_size,
    strides=1,
    value_projection=True,
    geometry_hidden_units=None,
):
    """Multiply-adds of one `local_relation_2d` call for one image.

    Counts the three 1x1 projections, one multiply-add per logit
    (composability + prior), the aggregation (`k*k*C` per output pixel, the
    same as a k x k depthwise convolution) and the prior MLP.

    Args:
        input_size: `(H, W)`.
        channels: C.
        channels_per_group: m.
        kernel_size: k.
        strides: 1 or 2.
        value_projection: whether the C x C value projection runs.
        geometry_hidden_units: h (None: `max(G, 8)`).

    Returns:
        The multiply-add count as an int.

    Example:
    >>> local_relation_flops((56, 56), 64, 8, 7)
    27124048
    """
    height, width = input_size
    groups = channels // channels_per_group
    hidden = geometry_hidden_units or max(groups, 8)
    cells = kernel_size * kernel_size
    inputs = height * width
    outputs = output_size(height, strides) * output_size(width, strides)
    projections = (outputs + inputs) * channels * groups
    if value_projection:
        projections += inputs * channels * channels
    prior = cells * (2 * hidden + hidden * groups)
    relation = local_relation_aggregation_flops(input_size, channels, channels_per_group,
                                                kernel_size, strides)
    return projections + relation + prior


def local_relation_aggregation_flops(input_size, channels, channels_per_group, kernel_size,
                                     strides=1):
    """Multiply-adds of one `local_relation_aggregation` call for one image.

    One per logit (composability + prior) and `k*k*C` per output pixel for
    the aggregation (as a k x k depthwise convolution); the exponentials are
    not counted.

    Args:
        input_size, channels, channels_per_group, kernel_size, strides: as in
            `local_relation_flops`.

    Returns:
        The multiply-add count as an int.

    Example:
    >>> local_relation_aggregation_flops((56, 56), 64, 8, 7)
    11063808
    """
    height, width = input_size
    cells = kernel_size * kernel_size
    outputs = output_size(height, strides) * output_size(width, strides)
    return outputs * cells * (channels + channels // channels_per_group)
