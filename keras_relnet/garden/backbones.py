"""Model Garden backbones `lrnet` and `resnet_context`, built by the applications' own code.

The builders run `lrnet_endpoints` / `resnet_endpoints` (the architecture of
`keras_relnet.applications`) with a tf_keras `LayerKit`, so a Model Garden
LR-Net is the package's LR-Net, with Model Garden's norm/activation settings
and L2 regulariser.
"""

import tf_keras
from official.vision.modeling.backbones import factory

from keras_relnet.applications.common import STAGE_DEPTHS
from keras_relnet.applications.layer_kit import LayerKit
from keras_relnet.applications.lrnet import lrnet_endpoints
from keras_relnet.applications.resnet import resnet_endpoints
from keras_relnet.garden import layers

ARCHITECTURES = {"lrnet": lrnet_endpoints, "resnet_context": resnet_endpoints}


def garden_kit(norm_activation_config=None, l2_regularizer=None):
    """The tf_keras `LayerKit`: garden relation layers, Model Garden's norm/activation.

    Args:
        norm_activation_config: Model Garden `NormActivation` config (None: the
            architecture's own BN settings and ReLU).
        l2_regularizer: tf_keras regulariser of every kernel.

    Returns:
        A `LayerKit`.
    """
    relation_layers = {"local_relation": layers.LocalRelation2D, "gc": layers.GlobalContext,
                       "snl": layers.SimplifiedNonLocal2D, "se": layers.SqueezeExcitation,
                       "nl": layers.NonLocal2D}
    if norm_activation_config is None:
        return LayerKit(tf_keras.layers, relation_layers, kernel_regularizer=l2_regularizer)
    return LayerKit(
        tf_keras.layers, relation_layers,
        batch_norm={"momentum": norm_activation_config.norm_momentum,
                    "epsilon": norm_activation_config.norm_epsilon},
        synchronized_batch_norm=norm_activation_config.use_sync_bn,
        activation=norm_activation_config.activation,
        kernel_regularizer=l2_regularizer,
    )


@tf_keras.utils.register_keras_serializable(package="keras_relnet_garden")
class RelationBackbone(tf_keras.Model):
    """A tf_keras backbone returning `{"2": c2, ..., "5": c5}` (strides 4..32).

    Args:
        architecture: "lrnet" or "resnet_context".
        model_id: depth, 26, 50 or 101.
        input_specs: `tf_keras.layers.InputSpec` of the images.
        kit: a `LayerKit` (default: `garden_kit()`).
        **options: the architecture's options (`lrnet_endpoints` /
            `resnet_endpoints` arguments, e.g. `context_block="gc"`).

    Example:
    >>> backbone = RelationBackbone("lrnet", 26, tf_keras.layers.InputSpec(
    ...     shape=[None, 64, 64, 3]), width_multiplier=0.25)
    >>> {level: spec.as_list() for level, spec in backbone.output_specs.items()}["5"]
    [None, 2, 2, 512]
    """

    def __init__(self, architecture, model_id, input_specs=None, kit=None, **options):
        if architecture not in ARCHITECTURES:
            raise ValueError(f"`architecture` must be one of {sorted(ARCHITECTURES)}; "
                             f"received {architecture!r}.")
        endpoints_of = ARCHITECTURES[architecture]
        if model_id not in STAGE_DEPTHS:
            raise ValueError(f"`model_id` of {architecture} must be one of {sorted(STAGE_DEPTHS)}; "
                             f"received {model_id!r}.")
        input_specs = input_specs or tf_keras.layers.InputSpec(shape=[None, None, None, 3])
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        endpoints = endpoints_of(inputs, kit or garden_kit(), STAGE_DEPTHS[model_id], **options)
        endpoints = {str(level): features for level, features in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, name=f"{architecture}{model_id}")
        self._config = dict(architecture=architecture, model_id=model_id,
                            input_specs=input_specs, **options)
        self._output_specs = {level: x.get_shape() for level, x in endpoints.items()}

    @property
    def output_specs(self):
        """`{level: TensorShape}` of the returned feature maps."""
        return self._output_specs

    def get_config(self):
        return dict(self._config)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


@factory.register_backbone_builder("lrnet")
def build_lrnet(input_specs, backbone_config, norm_activation_config, l2_regularizer=None):
    """Model Garden builder of the `lrnet` backbone (config `LRNetBackbone`)."""
    config = backbone_config.get()
    return RelationBackbone(
        "lrnet", config.model_id, input_specs,
        garden_kit(norm_activation_config, l2_regularizer),
        kernel_size=config.kernel_size, channels_per_group=config.channels_per_group,
        width_multiplier=config.width_multiplier,
        zero_init_residual=config.zero_init_residual,
        relation_options={"implementation": config.implementation},
        **_context_options(config))


@factory.register_backbone_builder("resnet_context")
def build_resnet_context(input_specs, backbone_config, norm_activation_config,
                         l2_regularizer=None):
    """Model Garden builder of the `resnet_context` backbone (config `ResNetContextBackbone`)."""
    config = backbone_config.get()
    return RelationBackbone("resnet_context", config.model_id, input_specs,
                            garden_kit(norm_activation_config, l2_regularizer),
                            **_context_options(config))


def _context_options(config):
    return dict(context_block=config.context_block or None,
                context_stages=tuple(config.context_stages) or None,
                context_ratio=config.context_ratio)

