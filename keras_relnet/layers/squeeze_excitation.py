"""The `SqueezeExcitation` Keras layer (SE block, CVPR 2018)."""

import keras

from keras_relnet.families import squeeze_excitation as family
from keras_relnet.families.squeeze_excitation import SqueezeExcitationOptions
from keras_relnet.layers.image_layer import ImageFamilyLayer


@keras.saving.register_keras_serializable(package="keras_relnet")
class SqueezeExcitation(ImageFamilyLayer):
    """Squeeze-excitation: rescale channels by a gate computed from the mean.

    `out = x * sigmoid(W2 ReLU(W1 GAP(x) + b1) + b2)` with `W1: C -> int(C *
    ratio)` (Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018).

    Args:
        ratio: reduction, hidden width `int(C * ratio)` (1/16 in the paper).
        kernel_initializer: initializer of both Dense kernels.
        kernel_regularizer: regularizer of both Dense kernels.
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

    family = family

    def __init__(self, ratio=1 / 16, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.set_family(SqueezeExcitationOptions(ratio, kernel_initializer), kernel_regularizer)

    def call(self, inputs):
        return self.family_forward(inputs)[0]
