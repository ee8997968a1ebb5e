"""TF Model Garden integration: tf_keras relation layers, backbones, experiments.

Importing this package registers (once) the backbones `lrnet` and
`resnet_context`, the task of `RelationRCNNTask`, and the experiments
`lrnet50_imagenet`, `gc_resnet50_imagenet`,
`fasterrcnn_relation_resnetfpn_coco`, `fasterrcnn_relation_e2e_resnetfpn_coco`,
`maskrcnn_gc_resnetfpn_coco` and
`maskrcnn_lrnet_fpn_coco`. Needs `tf-models-official` (`pip install
keras-relnet[garden]`).
"""

from keras_relnet.garden import backbones, configs, detection, layers, maskrcnn_model
from keras_relnet.garden.backbones import RelationBackbone, garden_kit
from keras_relnet.garden.configs import (
    Backbone,
    LRNetBackbone,
    RelationExperimentConfig,
    ResNetContextBackbone,
    check_backbone,
    check_detection_model,
    check_duplicate_removal,
)
from keras_relnet.garden.detection import (
    DuplicateRemovalHead,
    RelationHead,
    RelationRCNN,
    RelationRCNNTask,
)
from keras_relnet.garden.maskrcnn_model import RelationMaskRCNNModel, build_relation_rcnn
