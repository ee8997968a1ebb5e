"""The `LocalRelation2D` Keras layer (pixel-pixel relation, LR-Net)."""

import keras

from keras_relnet.layers.image_layer import ImageLayer
from keras_relnet.ops import checks, local_relation_dispatch
from keras_relnet.ops.local_relation import (
    COMPOSABILITIES,
    STRIDES,
    local_relation_2d,
    output_size,
)


@keras.saving.register_keras_serializable(package="keras_relnet")
class LocalRelation2D(ImageLayer):
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
        self.kernel_size = checks.check_odd_positive_int("kernel_size", kernel_size)
        self.channels_per_group = checks.check_positive_int(
            "channels_per_group", channels_per_group
        )
        self.strides = checks.check_choice("strides", strides, STRIDES)
        self.dilation_rate = checks.check_positive_int("dilation_rate", dilation_rate)
        self.composability = checks.check_choice(
            "composability", composability, COMPOSABILITIES
        )
        self.value_projection = bool(value_projection)
        self.geometry_hidden_units = (
            None
            if geometry_hidden_units is None
            else checks.check_positive_int(
                "geometry_hidden_units", geometry_hidden_units
            )
        )
        self.scale = checks.check_finite_number("scale", scale)
        self.implementation = checks.check_choice(
            "implementation", implementation, local_relation_dispatch.IMPLEMENTATIONS
        )
        self.supports_jit = local_relation_dispatch.supports_jit(self.implementation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.geometry_initializer = keras.initializers.get(geometry_initializer)

    def _checked_channels(self, input_shape):
        channels = self.checked_channels(input_shape)
        if channels % self.channels_per_group:
            raise ValueError(
                f"`inputs` channels ({channels}) must be divisible by "
                f"`channels_per_group` ({self.channels_per_group}); received "
                f"shape {tuple(input_shape)}."
            )
        return channels

    def build(self, input_shape):
        channels = self._checked_channels(input_shape)
        (self.query_kernel, self.key_kernel, self.value_kernel,
         geometry) = local_relation_weights(
            self.add_weight, channels, self.channels_per_group, self.value_projection,
            self.geometry_hidden_units, self.kernel_initializer, self.kernel_regularizer,
            self.geometry_initializer)
        (self.geometry_hidden_kernel, self.geometry_hidden_bias,
         self.geometry_output_kernel, self.geometry_output_bias) = geometry
        self.expect_channels(channels)

    def call(self, inputs):
        return self.from_nhwc(local_relation_2d(
            self.to_nhwc(inputs),
            self.query_kernel,
            self.key_kernel,
            self.value_kernel,
            (
                self.geometry_hidden_kernel,
                self.geometry_hidden_bias,
                self.geometry_output_kernel,
                self.geometry_output_bias,
            ),
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            composability=self.composability,
            scale=self.scale,
            implementation=self.implementation,
        ))

    def compute_output_shape(self, input_shape):
        channels = self._checked_channels(input_shape)
        batch, height, width, _ = self.nhwc_shape(input_shape)
        shrink = lambda size: (
            None if size is None else output_size(size, self.strides)
        )
        return self.shape_from_nhwc((batch, shrink(height), shrink(width), channels))

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            channels_per_group=self.channels_per_group,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            composability=self.composability,
            value_projection=self.value_projection,
            geometry_hidden_units=self.geometry_hidden_units,
            scale=self.scale,
            implementation=self.implementation,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            geometry_initializer=keras.initializers.serialize(
                self.geometry_initializer
            ),
        )
        return config


def local_relation_weights(add_weight, channels, channels_per_group, value_projection,
                           geometry_hidden_units, kernel_initializer, kernel_regularizer,
                           geometry_initializer):
    """Creates the weights of a local relation layer with `add_weight`.

    Shared by the Keras 3 layer and the tf_keras one of `keras_relnet.garden`,
    so both have the same weights in the same order.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        channels: input channels.
        channels_per_group, value_projection, geometry_hidden_units: the
            layer's arguments.
        kernel_initializer, kernel_regularizer: of the key, query and value
            projections.
        geometry_initializer: of the geometry prior's kernels.

    Returns:
        `(query_kernel, key_kernel, value_kernel or None, (hidden_kernel,
        hidden_bias, output_kernel, output_bias))`, the arguments of
        `ops.local_relation_2d`.
    """
    groups = channels // channels_per_group
    hidden = geometry_hidden_units or max(groups, 8)
    projection = dict(initializer=kernel_initializer, regularizer=kernel_regularizer)
    query = add_weight(name="query_kernel", shape=(channels, groups), **projection)
    key = add_weight(name="key_kernel", shape=(channels, groups), **projection)
    value = (add_weight(name="value_kernel", shape=(channels, channels), **projection)
             if value_projection else None)
    geometry = (
        add_weight(name="geometry_hidden_kernel", shape=(2, hidden),
                   initializer=geometry_initializer),
        add_weight(name="geometry_hidden_bias", shape=(hidden,), initializer="zeros"),
        add_weight(name="geometry_output_kernel", shape=(hidden, groups),
                   initializer=geometry_initializer),
        add_weight(name="geometry_output_bias", shape=(groups,), initializer="zeros"),
    )
    return query, key, value, geometry
