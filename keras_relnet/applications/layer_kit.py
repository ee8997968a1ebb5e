"""The layers a model builder is made of, so one architecture builds for two frameworks.

`LRNet` and `ResNet` build their networks through a `LayerKit`: with
`KERAS_KIT` they are Keras 3 models; with the tf_keras kit of
`keras_relnet.garden` the same code builds Model Garden backbones (tf_keras
layers, its norm/activation settings and L2 regulariser).
"""

from typing import Any, Mapping, NamedTuple, Optional

import keras

from keras_relnet.layers.global_context import GlobalContext
from keras_relnet.layers.local_relation import LocalRelation2D
from keras_relnet.layers.non_local import NonLocal2D
from keras_relnet.layers.simplified_non_local import SimplifiedNonLocal2D
from keras_relnet.layers.squeeze_excitation import SqueezeExcitation


class LayerKit(NamedTuple):
    """Layer factories for a model builder.

    Attributes:
        layers: the standard layers module (`keras.layers` or `tf_keras.layers`).
        relation_layers: classes by kind: "local_relation", "gc", "snl", "se", "nl".
        batch_norm: arguments that override every BatchNormalization's
            (e.g. `{"momentum": 0.99, "epsilon": 1e-3}`).
        synchronized_batch_norm: synchronise BN statistics across replicas.
        activation: overrides every activation (e.g. "swish"); None keeps ReLU.
        kernel_regularizer: regulariser of every convolution and relation kernel.

    Example:
    >>> KERAS_KIT.conv(8, 1, name="conv").filters
    8
    """

    layers: Any
    relation_layers: Mapping[str, type]
    batch_norm: Mapping[str, Any] = {}
    synchronized_batch_norm: bool = False
    activation: Optional[str] = None
    kernel_regularizer: Any = None

    def conv(self, filters, kernel_size, name, **kwargs):
        """A `Conv2D` with the kit's kernel regulariser."""
        return self.layers.Conv2D(filters, kernel_size, name=name,
                                  kernel_regularizer=self.kernel_regularizer, **kwargs)

    def norm(self, name, **defaults):
        """A `BatchNormalization`: the architecture's `defaults`, then the kit's overrides."""
        arguments = {**defaults, **self.batch_norm}
        if self.synchronized_batch_norm:
            arguments["synchronized"] = True
        return self.layers.BatchNormalization(name=name, **arguments)

    def act(self, name):
        """The activation (ReLU unless the kit overrides it)."""
        return self.layers.Activation(self.activation or "relu", name=name)

    def relation(self, kind, name, **kwargs):
        """A relation layer of `kind` ("local_relation", "gc", "snl", "se" or "nl")."""
        if self.kernel_regularizer is not None:
            kwargs["kernel_regularizer"] = self.kernel_regularizer
        return self.relation_layers[kind](name=name, **kwargs)


KERAS_KIT = LayerKit(
    layers=keras.layers,
    relation_layers={"local_relation": LocalRelation2D, "gc": GlobalContext,
                     "snl": SimplifiedNonLocal2D, "se": SqueezeExcitation,
                     "nl": NonLocal2D},
)
