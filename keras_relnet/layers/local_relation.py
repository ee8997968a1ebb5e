"""The `LocalRelation2D` Keras layer (pixel-pixel relation, LR-Net)."""

import keras

from keras_relnet.families import local_relation as family
from keras_relnet.families.local_relation import LocalRelationOptions
from keras_relnet.layers.image_layer import ImageFamilyLayer
from keras_relnet.ops.local_relation import dispatch as local_relation_dispatch


@keras.saving.register_keras_serializable(package="keras_relnet")
class LocalRelation2D(ImageFamilyLayer):
    """Local relation layer: adaptive k x k aggregation, a convolution replacement.

    Each output pixel aggregates its k x k input window with weights computed
    from the pixels themselves (Hu et al., "Local Relation Networks for Image
    Recognition", ICCV 2019). Channels are split into `G = C / m` groups of
    `m = channels_per_group` consecutive channels; per group one scalar query
    and key are projected by 1x1 convolutions, and

        w[i, j, g, cell] = softmax_cells(scale * Phi(q[i, j, g], key[cell, g])
                                         + P[g, cell])
        y[i, j, g*m + t] = sum_cells w[i, j, g, cell] * v[cell, g*m + t]

    where `Phi` is the composability (`-(q - key)^2` by default), `P` a
    learned geometric prior (a 2-layer MLP on the relative cell offsets) and
    `v` a 1x1 value projection of the input (or the input itself). Cells that
    fall outside the image are excluded from the softmax. Softmax and
    accumulation run in float32 under mixed precision.

    Args:
        kernel_size: odd window size k (the paper uses 7).
        channels_per_group: m, channels that share one aggregation map; the
            input channels must be divisible by it.
        strides: 1 or 2. Output pixel (i, j) centres its window on input pixel
            `(strides*i, strides*j)`; the output is `ceil(H / strides)` high.
        dilation_rate: spacing between window cells.
        composability: "squared_difference", "dot" or "abs_difference".
        value_projection: whether a C x C 1x1 projection computes the values.
        geometry_hidden_units: hidden width h of the prior MLP
            (None: `max(G, 8)`).
        scale: multiplier of the appearance term in the logits.
        implementation: "auto" (default), "reference", "xla" or "custom"
            (the compiled kernel); `print(keras_relnet.ops.explain())` gives
            the policy of "auto" per device. With "custom" the layer's
            `supports_jit` is False, so Keras' `jit_compile="auto"` leaves
            the train step uncompiled and the kernel runs.
        kernel_initializer: initializer of the query, key and value kernels.
        kernel_regularizer: regularizer of the query, key and value kernels.
        geometry_initializer: initializer of the prior MLP kernels.
        data_format: None (Keras' `image_data_format()`), "channels_last" or
            "channels_first"; NCHW inputs are transposed to NHWC and back.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a `[batch, height, width, channels]` tensor.

    Input shape:
        4D tensor `(batch, height, width, channels)` (`(batch, channels, height,
        width)` with "channels_first"); height and width may be
        unknown.

    Output shape:
        4D tensor `(batch, ceil(height / strides), ceil(width / strides),
        channels)`.

    Example:
    >>> layer = LocalRelation2D(kernel_size=7, channels_per_group=8, strides=2)
    >>> layer(keras.random.normal((2, 32, 32, 64))).shape
    TensorShape([2, 16, 16, 64])
    """

    family = family

    def __init__(
        self,
        kernel_size=7,
        channels_per_group=8,
        strides=1,
        dilation_rate=1,
        composability="squared_difference",
        value_projection=True,
        geometry_hidden_units=None,
        scale=1.0,
        implementation="auto",
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        geometry_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.set_family(LocalRelationOptions(
            kernel_size, channels_per_group, strides, dilation_rate, composability,
            value_projection, geometry_hidden_units, scale, implementation,
            kernel_initializer, geometry_initializer), kernel_regularizer)
        self.supports_jit = local_relation_dispatch.supports_jit(self.options.implementation)

    def build(self, input_shape):
        self.options.groups(self.checked_channels(input_shape), input_shape)
        super().build(input_shape)

    def call(self, inputs):
        return self.family_forward(inputs)[0]

    def compute_output_shape(self, input_shape):
        channels = self.checked_channels(input_shape)
        self.options.groups(channels, input_shape)
        batch, height, width, _ = self.nhwc_shape(input_shape)
        size = self.options.output_spatial_size
        return self.shape_from_nhwc((batch, size(height), size(width), channels))
