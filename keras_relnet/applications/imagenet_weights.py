"""`weights="imagenet"` for the ResNets: Keras' own ImageNet weights.

`ResNet50`/`ResNet101` have exactly the architecture and layer names of
`keras.applications.ResNet50`/`ResNet101`, so Keras' weights (downloaded and
cached by Keras, as `keras.applications` does) load layer by layer. Context
blocks (GC, SNL, SE, NL) keep their initialisation: every one with "add"
fusion starts as the identity, so a GC-ResNet-50 starts exactly as Keras'
ResNet-50, which is how GCNet was trained (context blocks added to an
ImageNet-trained ResNet). Those weights expect
`keras.applications.resnet.preprocess_input` ("caffe": BGR, mean-subtracted)
inputs. LR-Nets and ResNet-26 have no public ImageNet weights.
"""

import keras

# Stage depths with ImageNet weights, and the Keras application that has them.
KERAS_RESNETS = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101"}


def check_imagenet_request(stage_depths, include_top, classes):
    """Checks that `weights="imagenet"` can serve this ResNet.

    Args:
        stage_depths: the network's blocks per stage.
        include_top: whether it ends with the classifier.
        classes: its classifier size.

    Raises:
        ValueError: for depths without Keras weights, or a top that is not
            the 1000-class ImageNet classifier.

    Example:
    >>> check_imagenet_request((2, 2, 2, 2), True, 1000)
    Traceback (most recent call last):
    ...
    ValueError: `weights='imagenet'` is available for ResNet-50 and ResNet-101 (Keras' ImageNet weights) and their context-block variants; this network has stage depths (2, 2, 2, 2). Pass weights=None or a weights file.
    """
    depths = tuple(stage_depths)
    if depths not in KERAS_RESNETS:
        raise ValueError(
            "`weights='imagenet'` is available for ResNet-50 and ResNet-101 (Keras' "
            "ImageNet weights) and their context-block variants; this network has stage "
            f"depths {depths}. Pass weights=None or a weights file.")
    if include_top and classes != 1000:
        raise ValueError("`weights='imagenet'` with `include_top=True` needs the 1000 "
                         f"ImageNet classes; received classes={classes}. Pass "
                         "include_top=False to put your own classifier on the features.")


def load_imagenet_weights(model, stage_depths, include_top):
    """Copies Keras' ImageNet ResNet weights into `model`, layer by layer.

    Args:
        model: a keras-relnet ResNet (any context blocks) with those depths.
        stage_depths: a key of `KERAS_RESNETS`.
        include_top: whether `model` has the classifier.

    Returns:
        The number of layers whose weights were copied.

    Raises:
        ValueError: if a Keras layer has no counterpart in `model`.
        RuntimeError: when the weights are not in Keras' cache and cannot be
            downloaded (offline), saying where Keras looks for them.
    """
    name = KERAS_RESNETS[tuple(stage_depths)]
    try:
        reference = getattr(keras.applications, name)(
            weights="imagenet", include_top=include_top, input_shape=tuple(model.input_shape[1:]))
    except Exception as error:  # keras.utils.get_file raises a bare Exception offline
        if "URL fetch failure" not in str(error):
            raise
        raise RuntimeError(
            f"weights='imagenet' needs Keras' {name} ImageNet weights, which Keras downloads "
            "once into its cache (~/.keras/models, or $KERAS_HOME/models) and reads from there "
            f"afterwards; the download failed: {error}. Offline, copy that file into the "
            "cache first, or pass weights=None.") from None
    copied = 0
    for layer in reference.layers:
        if not layer.weights:
            continue
        try:
            target = model.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"The model has no layer '{layer.name}' of Keras' "
                             f"{reference.name}; its ImageNet weights do not fit.") from None
        target.set_weights(layer.get_weights())
        copied += 1
    return copied
