"""TF Model Garden integration: tf_keras relation layers, backbones, experiments.

Importing this package registers (once) the backbones `lrnet` and
`resnet_context` and the experiments `lrnet50_imagenet` and
`gc_resnet50_imagenet`. Needs `tf-models-official` (`pip install
keras-relnet[garden]`).
"""

from keras_relnet.garden import backbones, configs, layers
from keras_relnet.garden.backbones import RelationBackbone, garden_kit
from keras_relnet.garden.configs import (
    Backbone,
    LRNetBackbone,
    RelationExperimentConfig,
    ResNetContextBackbone,
    check_backbone,
)
