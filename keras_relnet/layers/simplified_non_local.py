"""The `SimplifiedNonLocal2D` Keras layer (query-independent non-local block)."""

import keras

from keras_relnet.layers.global_context import GlobalContext

_FIXED = ("ratio", "pooling", "fusion", "transform", "kernel_initializer")


@keras.saving.register_keras_serializable(package="keras_relnet")
class SimplifiedNonLocal2D(GlobalContext):
    """Simplified non-local block: attention pooling, one C x C Dense, add.

    The query-independent simplification of the non-local block (GCNet,
    2019): `out = x + W (sum_l softmax_l(Conv1x1_{C->1}(x)) * x[l])`, i.e. a
    `GlobalContext` with `pooling="attention"`, `fusion=("add",)` and
    `transform="linear"`. `W` starts at zero (identity at initialisation).

    Args:
        data_format: None (Keras' `image_data_format()`), "channels_last" or
            "channels_first"; NCHW inputs are transposed to NHWC and back.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[batch, height, width, channels]`.
        return_attention_scores: also return the pooling weights
            `[batch, height, width]`.

    Input shape:
        4D tensor `(batch, height, width, channels)` (`(batch, channels, height,
        width)` with "channels_first").

    Output shape:
        Same as the input.

    Example:
    >>> SimplifiedNonLocal2D()(keras.random.normal((1, 5, 5, 8))).shape
    TensorShape([1, 5, 5, 8])
    """

    def __init__(self, **kwargs):
        fixed = sorted(set(kwargs) & set(_FIXED))
        if fixed:
            raise ValueError(
                f"SimplifiedNonLocal2D fixes {list(_FIXED)}; received {fixed}. "
                "Use GlobalContext to choose them."
            )
        super().__init__(pooling="attention", fusion=("add",), transform="linear",
                         **kwargs)

    def get_config(self):
        config = super().get_config()
        for fixed in _FIXED:
            config.pop(fixed)
        return config
