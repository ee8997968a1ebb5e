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
