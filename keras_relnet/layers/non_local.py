"""The `NonLocal2D` Keras layer (non-local block, CVPR 2018)."""

import keras

from keras_relnet.families import non_local as family
from keras_relnet.families.non_local import NonLocalOptions
from keras_relnet.layers.image_layer import ImageFamilyLayer


@keras.saving.register_keras_serializable(package="keras_relnet")
class NonLocal2D(ImageFamilyLayer):
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
        kernel_regularizer: regularizer of every projection kernel.
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

    family = family

    def __init__(self, reduction=2, mode="embedded_gaussian", sub_sample=False,
                 use_scale=True, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.set_family(NonLocalOptions(reduction, mode, sub_sample, use_scale),
                        kernel_regularizer)

    def call(self, inputs, return_attention_scores=False):
        outputs, weights = self.family_forward(inputs)
        return (outputs, weights) if return_attention_scores else outputs
