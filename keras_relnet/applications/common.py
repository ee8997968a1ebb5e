"""What every Keras-Application-style model shares: inputs, weights, head."""

import os
import warnings

import keras

from keras_relnet.ops import checks

# Bottleneck blocks per stage (c2..c5) of the 26/50/101-layer ResNets and LR-Nets.
STAGE_DEPTHS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


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

    Raises:
        ValueError: when Keras' image data format is "channels_first".

    Example:
    >>> inputs, image = application_inputs(None, (32, 32, 3), True, "input_layer")
    >>> image.shape
    (None, 32, 32, 3)
    """
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "keras-relnet models are built channels_last (NHWC), but "
            "keras.config.image_data_format() is "
            f"{keras.config.image_data_format()!r}. Call "
            "keras.config.set_image_data_format('channels_last') before building one "
            "(the relation layers themselves accept data_format='channels_first')."
        )
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


def checked_weights(weights, imagenet=False):
    """`weights` must be None, an existing weights file, or "imagenet" where the
    model has ImageNet weights.

    Args:
        weights: the `weights` argument of an application.
        imagenet: whether this model can load `weights="imagenet"`.

    Returns:
        None, "imagenet" or the path as a string.

    Example:
    >>> checked_weights(None) is None
    True
    """
    if weights is None or (weights == "imagenet" and imagenet):
        return weights
    if weights == "imagenet":
        raise ValueError(
            "This model has no public ImageNet weights (LR-Nets and ResNet-26 have none; "
            "ResNet50, ResNet101 and their GC/SNL/SE/NL variants load Keras'); pass "
            "weights=None or the path to a weights file.")
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        return os.fspath(weights)
    raise ValueError(
        "`weights` must be None (random initialisation), 'imagenet' (the ResNets) or "
        f"the path to an existing weights file; received {weights!r}."
    )


def checked_pooling(include_top, pooling):
    """Without the top, `pooling` is None, "avg" or "max".

    Args:
        include_top: whether the model ends with the classifier.
        pooling: the `pooling` argument.

    Returns:
        `pooling`, unchanged.

    Example:
    >>> checked_pooling(False, "avg")
    'avg'
    """
    if not include_top and pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` must be None, 'avg' or 'max'; received {pooling!r}."
        )
    return pooling


def classification_head(x, include_top, pooling, classes, classifier_activation):
    """The top of a `keras.applications` model: pooled classifier or pooling.

    Args:
        x: the last feature map.
        include_top: add global average pooling and a `classes`-way Dense.
        pooling: without the top: None, "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: activation of the top (None for logits).

    Returns:
        The model output tensor.

    Example:
    >>> head = classification_head(keras.Input((7, 7, 8)), True, None, 10, "softmax")
    >>> head.shape
    (None, 10)
    """
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # Mixed precision: the classifier and its softmax run in float32.
        policy = keras.mixed_precision.global_policy().name
        return keras.layers.Dense(
            classes,
            activation=classifier_activation,
            dtype="float32" if policy.startswith("mixed") else None,
            name="predictions",
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def application(builder, public_name, model_name, summary, **fixed):
    """A `keras.applications`-style constructor: `builder` with fixed arguments.

    Args:
        builder: the generic model builder (e.g. `ResNet`, `LRNet`).
        public_name: the constructor's name, e.g. "GCResNet50".
        model_name: the default `name` of the built model.
        summary: the first docstring line.
        **fixed: builder arguments the constructor fixes by default (a caller's
            keyword arguments override them).

    Returns:
        The constructor, with the signature of `keras.applications.ResNet50`
        plus `**kwargs` forwarded to `builder`.

    Example:
    >>> from keras_relnet.applications.resnet import ResNet
    >>> Tiny = application(ResNet, "Tiny", "tiny", "A tiny ResNet.",
    ...                    stage_depths=(1, 1, 1, 1))
    >>> Tiny(input_shape=(32, 32, 3), classes=2).name
    'tiny'
    """

    def constructor(include_top=True, weights=None, input_tensor=None,
                    input_shape=None, pooling=None, classes=1000,
                    classifier_activation="softmax", name=model_name, **kwargs):
        return builder(include_top=include_top, weights=weights,
                       input_tensor=input_tensor, input_shape=input_shape,
                       pooling=pooling, classes=classes,
                       classifier_activation=classifier_activation, name=name,
                       **{**fixed, **kwargs})

    constructor.__name__ = constructor.__qualname__ = public_name
    constructor.__doc__ = f"""{summary}

    Args: as `keras.applications.ResNet50` (`weights` is None, a path to a
    weights file, or "imagenet" where the model has Keras' ImageNet weights),
    plus any `{builder.__name__}` argument as a keyword (defaults here:
    {fixed}).

    Returns:
        A `keras.Model`.
    """
    return constructor


def classifier_model(endpoints_of, include_top, weights, input_tensor, input_shape, pooling,
                     classes, classifier_activation, name, imagenet_loader=None):
    """A Keras-Application model: inputs, the network's deepest features, the head.

    Args:
        endpoints_of: function of the image tensor returning `{level: features}`.
        include_top, weights, input_tensor, input_shape, pooling, classes,
            classifier_activation, name: as in `keras.applications.ResNet50`
            (`weights` None, a weights file, or "imagenet" with a loader).
        imagenet_loader: for models with ImageNet weights, a function that
            loads them into the built model; None: "imagenet" is refused.

    Returns:
        A `keras.Model`.

    Example:
    >>> stem = lambda image: {2: keras.layers.Conv2D(4, 3)(image)}
    >>> classifier_model(stem, True, None, None, (8, 8, 3), None, 5, "softmax",
    ...                  "tiny").output_shape
    (None, 5)
    """
    weights = checked_weights(weights, imagenet=imagenet_loader is not None)
    checked_pooling(include_top, pooling)
    inputs, image = application_inputs(input_tensor, input_shape, include_top,
                                       name="input_layer")
    endpoints = endpoints_of(image)
    x = classification_head(endpoints[max(endpoints)], include_top, pooling, classes,
                            classifier_activation)
    model = keras.Model(inputs, x, name=name)
    if weights == "imagenet":
        imagenet_loader(model)
    elif weights is not None:
        _load_weights_file(model, weights)
    return model


def _load_weights_file(model, path):
    """`model.load_weights(path)`, with one clear error when the file was
    saved from a model of other shapes (instead of Keras' warning per layer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model.load_weights(path)
        except ValueError as error:
            detail = next((line for line in str(error).splitlines() if "shape" in line),
                          str(error).splitlines()[0])
            raise ValueError(
                f"`weights` {path} do not fit this model: {detail.strip()} Were they saved "
                "from a model with other options (width_multiplier, classes, input size, "
                "context blocks)?") from None
