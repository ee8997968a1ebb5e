"""Base class of the image layers: NHWC math, NHWC or NCHW inputs."""

import keras
import tensorflow as tf

from keras_relnet.families.options import FamilyFront
from keras_relnet.ops import checks

DATA_FORMATS = ("channels_last", "channels_first")


def checked_data_format(data_format):
    """The data format a layer uses: `data_format`, or Keras' global one when None.

    Args:
        data_format: None, "channels_last" or "channels_first".

    Returns:
        "channels_last" or "channels_first".

    Example:
    >>> checked_data_format(None) == keras.config.image_data_format()
    True
    """
    if data_format is None:
        data_format = keras.config.image_data_format()
    return checks.check_choice("data_format", data_format, DATA_FORMATS)


class ImageLayer(keras.layers.Layer):
    """A layer whose ops run on NHWC tensors and whose inputs follow `data_format`.

    With "channels_first" (the argument, or `keras.config.image_data_format()`
    when it is None, as Keras' own image layers do) the layer takes
    `[batch, channels, height, width]`, runs its ops on the NHWC transpose and
    returns the output in NCHW again, so it drops into an NCHW model.

    Args:
        data_format: None, "channels_last" or "channels_first".
        **kwargs: base `keras.layers.Layer` arguments.

    Example:
    >>> class Double(ImageLayer):
    ...     def call(self, inputs):
    ...         return self.from_nhwc(2 * self.to_nhwc(inputs))
    >>> Double(data_format="channels_first")(tf.ones([1, 3, 2, 2])).shape
    TensorShape([1, 3, 2, 2])
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = checked_data_format(data_format)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    @property
    def _channels_first(self):
        return self.data_format == "channels_first"

    def nhwc_shape(self, input_shape):
        """`input_shape` (in the layer's format) as `(batch, height, width, channels)`."""
        layout = ("[batch, channels, height, width]" if self._channels_first
                  else "[batch, height, width, channels]")
        shape = checks.check_rank("inputs", input_shape, 4, layout)
        return (shape[0],) + shape[2:] + shape[1:2] if self._channels_first else shape

    def shape_from_nhwc(self, shape):
        """An NHWC shape in the layer's format."""
        shape = tuple(shape)
        return (shape[0], shape[3]) + shape[1:3] if self._channels_first else shape

    def to_nhwc(self, inputs):
        return tf.transpose(inputs, [0, 2, 3, 1]) if self._channels_first else inputs

    def from_nhwc(self, outputs):
        return tf.transpose(outputs, [0, 3, 1, 2]) if self._channels_first else outputs

    def checked_channels(self, input_shape):
        """The known channel count of an input shape in the layer's format."""
        return checks.checked_channels("inputs", self.nhwc_shape(input_shape))

    def expect_channels(self, channels):
        """After `build`: inputs must have `channels` channels."""
        axis = 1 if self._channels_first else -1
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={axis: channels})

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


class ImageFamilyLayer(FamilyFront, ImageLayer):
    """A Keras 3 front over an image family of `keras_relnet.families`.

    `build` creates the family's weights for the input channels; `forward`
    runs the family's forward on the NHWC view of the inputs and returns its
    outputs in the layer's format (and the attention, if the family has one).
    Subclasses set `family` and call `set_family` in `__init__`.
    """

    family = None  # the module in keras_relnet.families

    def build(self, input_shape):
        channels = self.checked_channels(input_shape)
        self.family_weights = self.family.create_weights(self.add_weight, self.options, channels,
                                                         self.kernel_regularizer)
        self.expect_channels(channels)

    def family_forward(self, inputs):
        """`(outputs, attention or None)` of the family's forward."""
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if not keras.backend.is_float_dtype(dtype):  # Keras casts floats only
            raise ValueError(f"`inputs` of {type(self).__name__} must be floating point; "
                             f"received {dtype}. Cast them first (keras.ops.cast, or a "
                             "Rescaling layer for integer pixels).")
        outputs = self.family.forward(self.to_nhwc(inputs), self.family_weights, self.options)
        outputs, attention = outputs if isinstance(outputs, tuple) else (outputs, None)
        return self.from_nhwc(outputs), attention

    def compute_output_shape(self, input_shape):
        self.checked_channels(input_shape)
        return tuple(input_shape)
