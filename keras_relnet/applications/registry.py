"""The package's models by name, for command lines and configs."""

from keras_relnet.applications.lrnet import LRNet26, LRNet50, LRNet101
from keras_relnet.applications.resnet import (
    GCResNet50,
    NLResNet50,
    ResNet26,
    ResNet50,
    ResNet101,
    SEResNet50,
)

MODELS = {
    "lrnet26": LRNet26,
    "lrnet50": LRNet50,
    "lrnet101": LRNet101,
    "resnet26": ResNet26,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "gc_resnet50": GCResNet50,
    "se_resnet50": SEResNet50,
    "nl_resnet50": NLResNet50,
}


def build_model(name, **kwargs):
    """Builds the application called `name` (a key of `MODELS`).

    Args:
        name: e.g. "lrnet50", "resnet50", "gc_resnet50".
        **kwargs: the application's arguments (`weights`, `input_shape`,
            `classes`, ...).

    Returns:
        A `keras.Model`.

    Example:
    >>> sorted(MODELS)[:3]
    ['gc_resnet50', 'lrnet101', 'lrnet26']
    >>> build_model("lrnet26", input_shape=(32, 32, 3), classes=10,
    ...             width_multiplier=0.25).name
    'lrnet26'
    """
    if name not in MODELS:
        raise ValueError(f"`model` must be one of {sorted(MODELS)}; received {name!r}.")
    return MODELS[name](**kwargs)


def load_model(model, weights=None, classes=1000, input_size=224, width_multiplier=None,
               **kwargs):
    """A package model by name (with optional weights) or a saved `.keras` model.

    Args:
        model: a key of `MODELS` or the path of a `.keras` file.
        weights: weights file of a package model (None: random).
        classes: classifier size of a package model.
        input_size: image height and width of a package model.
        width_multiplier: of a package model; None: the model's default.
        **kwargs: more arguments of a package model.

    Returns:
        A `keras.Model`.

    Example:
    >>> load_model("lrnet26", classes=10, input_size=32).output.shape
    (None, 10)
    """
    import keras

    if model.endswith(".keras"):
        if weights is not None or width_multiplier is not None:
            raise ValueError("`weights` and `width_multiplier` apply to package models; a "
                             ".keras file holds its own; received weights="
                             f"{weights!r}, width_multiplier={width_multiplier!r}.")
        return keras.models.load_model(model)
    if width_multiplier is not None:
        kwargs["width_multiplier"] = width_multiplier
    return build_model(model, weights=weights, classes=classes,
                       input_shape=(input_size, input_size, 3), **kwargs)
