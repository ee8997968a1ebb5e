"""Input handling shared by the Keras-Application-style models."""

import keras

from keras_relnet.ops import checks


def application_inputs(input_tensor, input_shape, include_top, name):
    """The model inputs and the image tensor, as `keras.applications` does.

    Args:
        input_tensor: None, a Keras tensor, or a backend tensor to wrap.
        input_shape: `(height, width, channels)` or None: (224, 224, 3) with
            the top, (None, None, 3) without it.
        include_top: whether the model ends with the classifier.
        name: name of the created `keras.Input`.

    Returns:
        `(inputs, image)`: what `keras.Model` takes as inputs, and the tensor
        the first layer consumes.

    Example:
    >>> inputs, image = application_inputs(None, (32, 32, 3), True, "input_layer")
    >>> image.shape
    (None, 32, 32, 3)
    """
    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    input_shape = checks.check_rank(
        "input_shape", input_shape, 3, "(height, width, channels)"
    )
    if input_shape[-1] is None:
        raise ValueError(
            f"`input_shape` needs a known channel count; received {input_shape}."
        )
    if input_tensor is None:
        image = keras.Input(shape=input_shape, name=name)
        return image, image
    if isinstance(input_tensor, keras.KerasTensor):
        return keras.utils.get_source_inputs(input_tensor), input_tensor
    image = keras.Input(tensor=input_tensor, shape=input_shape, name=name)
    return image, image
