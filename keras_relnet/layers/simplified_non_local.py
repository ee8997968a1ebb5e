"""The `SimplifiedNonLocal2D` Keras layer (query-independent non-local block)."""

import keras

from keras_relnet.families.global_context import (
    SIMPLIFIED_NON_LOCAL_FIXED,
    simplified_non_local_options,
)
from keras_relnet.layers.global_context import GlobalContext


@keras.saving.register_keras_serializable(package="keras_relnet")
class SimplifiedNonLocal2D(GlobalContext):
    """Simplified non-local block: attention pooling, one C x C Dense, add.

    The query-independent simplification of the non-local block (GCNet,
    2019): `out = x + W (sum_l softmax_l(Conv1x1_{C->1}(x)) * x[l])`, i.e. a
    `GlobalContext` with `pooling="attention"`, `fusion=("add",)` and
    `transform="linear"`. `W` starts at zero (identity at initialisation).

    Args:
        kernel_regularizer: regularizer of the attention and `W` kernels.
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
        options = simplified_non_local_options(kwargs)
        super().__init__(**options.to_config(), **kwargs)

    def get_config(self):
        config = super().get_config()
        for fixed in SIMPLIFIED_NON_LOCAL_FIXED:
            config.pop(fixed)
        return config
