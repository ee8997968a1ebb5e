"""The `GlobalContext` Keras layer (GC block, GCNet 2019)."""

import keras

from keras_relnet.layers.image_layer import ImageLayer
from keras_relnet.ops import checks
from keras_relnet.ops.context import FUSIONS, POOLINGS, TRANSFORMS, global_context


@keras.saving.register_keras_serializable(package="keras_relnet")
class GlobalContext(ImageLayer):
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

    def __init__(self, ratio=1 / 16, pooling="attention", fusion=("add",),
                 transform="bottleneck", kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.ratio = checks.check_positive_number("ratio", ratio)
        self.pooling = checks.check_choice("pooling", pooling, POOLINGS)
        fusion = (fusion,) if isinstance(fusion, str) else tuple(fusion)
        if not fusion or len(set(fusion)) != len(fusion):
            raise ValueError(
                "`fusion` must be a non-empty sequence of distinct values from "
                f"{list(FUSIONS)}; received {fusion!r}."
            )
        for kind in fusion:
            checks.check_choice("fusion", kind, FUSIONS)
        self.fusion = fusion
        self.transform = checks.check_choice("transform", transform, TRANSFORMS)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = self.checked_channels(input_shape)
        self.pooling_weights, self.transforms = global_context_weights(
            self.add_weight, channels, self.ratio, self.pooling, self.fusion, self.transform,
            self.kernel_initializer)
        self.expect_channels(channels)

    def call(self, inputs, return_attention_scores=False):
        outputs, attention = global_context(
            self.to_nhwc(inputs), self.pooling_weights, self.transforms, self.pooling,
            self.transform)
        outputs = self.from_nhwc(outputs)
        return (outputs, attention) if return_attention_scores else outputs

    def compute_output_shape(self, input_shape):
        self.checked_channels(input_shape)
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            ratio=self.ratio,
            pooling=self.pooling,
            fusion=list(self.fusion),
            transform=self.transform,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def global_context_weights(add_weight, channels, ratio, pooling, fusion, transform,
                           kernel_initializer):
    """Creates the weights of a GC-family block with `add_weight`.

    Shared by the Keras 3 layer and the tf_keras one of `keras_relnet.garden`.

    Args:
        add_weight: the layer's `add_weight` (Keras 3 or tf_keras).
        channels: input channels.
        ratio, pooling, fusion, transform, kernel_initializer: the layer's
            arguments.

    Returns:
        `(pooling_weights, transforms)`, the arguments of `ops.global_context`.
    """
    pooling_weights = ()
    if pooling == "attention":
        pooling_weights = (
            add_weight(name="attention_kernel", shape=(channels, 1),
                       initializer=keras.initializers.VarianceScaling(
                           2.0, "fan_in", "untruncated_normal")),
            add_weight(name="attention_bias", shape=(1,), initializer="zeros"),
        )
    transforms = {}
    for kind in fusion:
        weight = lambda name, shape, initializer, kind=kind: add_weight(
            name=f"{kind}_{name}", shape=shape, initializer=initializer)
        if transform == "linear":
            transforms[kind] = (weight("kernel", (channels, channels), "zeros"),
                                weight("bias", (channels,), "zeros"))
            continue
        width = checks.checked_reduced_width(channels, ratio, "channels")
        transforms[kind] = (
            weight("kernel1", (channels, width), kernel_initializer),
            weight("bias1", (width,), "zeros"),
            weight("norm_gamma", (width,), "ones"),
            weight("norm_beta", (width,), "zeros"),
            weight("kernel2", (width, channels), "zeros"),
            weight("bias2", (channels,), "zeros"),
        )
    return pooling_weights, transforms
