"""The `GlobalContext` Keras layer (GC block, GCNet 2019)."""

import keras

from keras_relnet.families import global_context as family
from keras_relnet.families.global_context import GlobalContextOptions
from keras_relnet.layers.image_layer import ImageFamilyLayer


@keras.saving.register_keras_serializable(package="keras_relnet")
class GlobalContext(ImageFamilyLayer):
    """Global context block: one query-independent context added to every pixel.

    Pools one context vector per image, transforms it, and fuses it into
    every position (Cao et al., "GCNet: Non-local Networks Meet
    Squeeze-Excitation Networks and Beyond", 2019):

        alpha = softmax_l(Conv1x1_{C->1}(x))            (attention pooling)
        c     = sum_l alpha[l] * x[l]                   (or mean_l x[l])
        T(c)  = Dense_{P->C}(ReLU(LayerNorm(Dense_{C->P}(c))))   (bottleneck)
        out   = x * sigmoid(T_mul(c)) + T_add(c)        (per chosen fusion)

    with `P = int(C * ratio)`. The last Dense of each transform starts at
    zero, so `add` fusion is an exact identity at initialisation; `multiply`
    fusion alone starts as `x * 0.5` (`sigmoid(0)`), as in the reference code.
    The softmax and LayerNorm statistics run in float32 under mixed precision.

    Args:
        ratio: bottleneck ratio, `P = int(C * ratio)` (1/16 is the paper's r16).
        pooling: "attention" or "average".
        fusion: non-empty sequence of "add" and/or "multiply".
        transform: "bottleneck" or "linear" (one C x C Dense: simplified
            non-local).
        kernel_initializer: initializer of the first Dense of each bottleneck.
        kernel_regularizer: regularizer of the attention and transform kernels.
        data_format: None (Keras' `image_data_format()`), "channels_last" or
            "channels_first"; NCHW inputs are transposed to NHWC and back.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[batch, height, width, channels]`.
        return_attention_scores: also return the attention pooling weights
            `[batch, height, width]` (None with average pooling).

    Input shape:
        4D tensor `(batch, height, width, channels)` (`(batch, channels, height,
        width)` with "channels_first"); height and width may be
        unknown.

    Output shape:
        Same as the input.

    Example:
    >>> block = GlobalContext(ratio=1 / 4)
    >>> block(keras.random.normal((2, 7, 7, 64))).shape
    TensorShape([2, 7, 7, 64])
    """

    family = family

    def __init__(self, ratio=1 / 16, pooling="attention", fusion=("add",),
                 transform="bottleneck", kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.set_family(GlobalContextOptions(ratio, pooling, fusion, transform,
                                             kernel_initializer), kernel_regularizer)

    def call(self, inputs, return_attention_scores=False):
        outputs, attention = self.family_forward(inputs)
        return (outputs, attention) if return_attention_scores else outputs
