"""The `SqueezeExcitation` Keras layer (SE block, CVPR 2018)."""

import keras

from keras_relnet.layers.image_layer import ImageLayer
from keras_relnet.ops import checks
from keras_relnet.ops.context import squeeze_excitation


@keras.saving.register_keras_serializable(package="keras_relnet")
class SqueezeExcitation(ImageLayer):
    """Squeeze-excitation: rescale channels by a gate computed from the mean.

    `out = x * sigmoid(W2 ReLU(W1 GAP(x) + b1) + b2)` with `W1: C -> int(C *
    ratio)` (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

    Args:
        ratio: reduction, hidden width `int(C * ratio)` (1/16 in the paper).
        kernel_initializer: initializer of both Dense kernels.
        data_format: None (Keras' `image_data_format()`), "channels_last" or
            "channels_first"; NCHW inputs are transposed to NHWC and back.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[batch, height, width, channels]`.

    Input shape:
        4D tensor `(batch, height, width, channels)` (`(batch, channels, height,
        width)` with "channels_first").

    Output shape:
        Same as the input.

    Example:
    >>> SqueezeExcitation(ratio=1 / 4)(keras.random.normal((1, 5, 5, 8))).shape
    TensorShape([1, 5, 5, 8])
    """

    def __init__(self, ratio=1 / 16, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.ratio = checks.check_positive_number("ratio", ratio)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = self.checked_channels(input_shape)
        self.kernel1, self.bias1, self.kernel2, self.bias2 = squeeze_excitation_weights(
            self.add_weight, channels, self.ratio, self.kernel_initializer)
        self.expect_channels(channels)

    def call(self, inputs):
        return self.from_nhwc(squeeze_excitation(self.to_nhwc(inputs), self.kernel1, self.bias1,
                                                 self.kernel2, self.bias2))

    def compute_output_shape(self, input_shape):
        self.checked_channels(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(ratio=self.ratio,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


def squeeze_excitation_weights(add_weight, channels, ratio, kernel_initializer):
    """Creates the SE weights `(kernel1, bias1, kernel2, bias2)` with `add_weight`.

    Shared by the Keras 3 layer and the tf_keras one of `keras_relnet.garden`.
    """
    hidden = checks.checked_reduced_width(channels, ratio, "hidden units")
    return (
        add_weight(name="kernel1", shape=(channels, hidden), initializer=kernel_initializer),
        add_weight(name="bias1", shape=(hidden,), initializer="zeros"),
        add_weight(name="kernel2", shape=(hidden, channels), initializer=kernel_initializer),
        add_weight(name="bias2", shape=(channels,), initializer="zeros"),
    )
