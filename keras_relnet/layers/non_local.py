"""The `NonLocal2D` Keras layer (non-local block, CVPR 2018)."""

import keras

from keras_relnet.layers.image_layer import ImageLayer
from keras_relnet.ops import checks
from keras_relnet.ops.context import NON_LOCAL_MODES, non_local_2d


@keras.saving.register_keras_serializable(package="keras_relnet")
class NonLocal2D(ImageLayer):
    """Non-local block: every position attends to every other position.

    `z = x + W_z(sum_j f(x_i, x_j) g(x_j))` (Wang et al., "Non-local Neural
    Networks", CVPR 2018) with theta, phi, g 1x1 projections `C -> C'`,
    `C' = max(C // reduction, 1)`, and the pairwise function f:

    - "embedded_gaussian": `softmax_j(theta_i . phi_j / sqrt(C'))`
    - "dot_product": `theta_i . phi_j / L'`
    - "gaussian": `softmax_j(x_i . x_j)` (no theta/phi projections)
    - "concatenation": `ReLU(w1 . theta_i + w2 . phi_j) / L'`

    `W_z` starts at zero, so the block is the identity at initialisation;
    theta, phi and g start from N(0, 0.01). f runs in float32 under mixed
    precision.

    Args:
        reduction: `C' = max(C // reduction, 1)`.
        mode: the pairwise function, one of the four above.
        sub_sample: 2x2 max pooling (stride 2) after the phi and g projections.
        use_scale: divide embedded-gaussian logits by `sqrt(C')`.
        data_format: None (Keras' `image_data_format()`), "channels_last" or
            "channels_first"; NCHW inputs are transposed to NHWC and back.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[batch, height, width, channels]`.
        return_attention_scores: also return f, `[batch, H*W, L']`.

    Input shape:
        4D tensor `(batch, height, width, channels)` (`(batch, channels, height,
        width)` with "channels_first"); height and width may be
        unknown.

    Output shape:
        Same as the input.

    Example:
    >>> NonLocal2D(mode="dot_product")(keras.random.normal((1, 6, 6, 16))).shape
    TensorShape([1, 6, 6, 16])
    """

    def __init__(self, reduction=2, mode="embedded_gaussian", sub_sample=False,
                 use_scale=True, **kwargs):
        super().__init__(**kwargs)
        self.reduction = checks.check_positive_int("reduction", reduction)
        self.mode = checks.check_choice("mode", mode, NON_LOCAL_MODES)
        self.sub_sample = bool(sub_sample)
        self.use_scale = bool(use_scale)

    def build(self, input_shape):
        channels = self.checked_channels(input_shape)
        (self.theta_weights, self.phi_weights, self.g_weights, self.output_weights,
         self.concat_kernel) = non_local_weights(self.add_weight, channels, self.reduction,
                                                 self.mode)
        self.expect_channels(channels)

    def call(self, inputs, return_attention_scores=False):
        outputs, weights = non_local_2d(
            self.to_nhwc(inputs), self.theta_weights, self.phi_weights, self.g_weights,
            self.output_weights, mode=self.mode, sub_sample=self.sub_sample,
            use_scale=self.use_scale, concat_weights=self.concat_kernel)
        outputs = self.from_nhwc(outputs)
        return (outputs, weights) if return_attention_scores else outputs

    def compute_output_shape(self, input_shape):
        self.checked_channels(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, mode=self.mode,
                      sub_sample=self.sub_sample, use_scale=self.use_scale)
        return config


def non_local_weights(add_weight, channels, reduction, mode):
    """Creates the weights of a non-local block with `add_weight`.

    Shared by the Keras 3 layer and the tf_keras one of `keras_relnet.garden`.

    Returns:
        `(theta, phi, g, output, concat_kernel)`: (kernel, bias) pairs (theta
        and phi None for "gaussian") and the concatenation kernel (None
        unless "concatenation"), the arguments of `ops.non_local_2d`.
    """
    inner = max(channels // reduction, 1)
    projection = keras.initializers.RandomNormal(stddev=0.01)

    def conv(name, shape, kernel_initializer):
        return (add_weight(name=f"{name}_kernel", shape=shape, initializer=kernel_initializer),
                add_weight(name=f"{name}_bias", shape=shape[-1:], initializer="zeros"))

    theta = phi = concat_kernel = None
    if mode != "gaussian":
        theta = conv("theta", (channels, inner), projection)
        phi = conv("phi", (channels, inner), projection)
    g = conv("g", (channels, inner), projection)
    output = conv("output", (inner, channels), "zeros")
    if mode == "concatenation":
        concat_kernel = add_weight(name="concat_kernel", shape=(2 * inner,),
                                   initializer=projection)
    return theta, phi, g, output, concat_kernel
