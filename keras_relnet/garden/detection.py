"""Model Garden detection: the relation R-CNN config, task and registered experiments."""

import dataclasses
from typing import List

import tensorflow as tf
import tf_keras
from official.core import exp_factory, task_factory
from official.modeling import hyperparams
from official.vision.configs import backbones
from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.tasks import maskrcnn

from keras_relnet.garden.configs import (
    Backbone,
    LRNetBackbone,
    RelationExperimentConfig,
    ResNetContextBackbone,
)
from keras_relnet.garden.maskrcnn_model import build_relation_rcnn
from keras_relnet.ops.duplicate_removal import (
    IOU_THRESHOLDS,
    duplicate_removal_loss,
    duplicate_removal_targets,
)


@dataclasses.dataclass
class RelationHead(hyperparams.Config):
    """The relation modules of the 2fc box head (`detection_head.num_fcs` of them).

    The fc widths are `detection_head.fc_dims`; `num_relation_heads` must divide them.
    """

    use_relation: bool = True
    num_relation_heads: int = 16
    geometry_dim: int = 64
    query_chunk_size: int = 256


@dataclasses.dataclass
class DuplicateRemovalHead(hyperparams.Config):
    """The learned duplicate removal that replaces NMS (end-to-end relation detector).

    Per class the `top_k` best RoIs are candidates; a 16-head relation module
    among them and one classifier per IoU threshold give the final scores.
    The loss (binary cross-entropy, positives weighted `positive_weight`) is
    added to the detector's with `loss_weight`; `detection_generator` then
    only decodes boxes, and its `max_num_detections` caps the detections.
    """

    use_duplicate_removal: bool = False
    top_k: int = 100
    iou_thresholds: List[float] = dataclasses.field(
        default_factory=lambda: list(IOU_THRESHOLDS))
    embedding_dim: int = 128
    rank_dim: int = 1024
    num_heads: int = 16
    key_dim: int = 64
    geometry_dim: int = 64
    query_chunk_size: int = 32
    score_threshold: float = 1e-3
    positive_weight: float = 4.0
    loss_weight: float = 1.0


@dataclasses.dataclass
class RelationRCNN(maskrcnn_config.MaskRCNN):
    """`MaskRCNN` with the relation box head and the relation backbones available."""

    backbone: Backbone = dataclasses.field(
        default_factory=lambda: Backbone(type="resnet", resnet=backbones.ResNet()))
    relation_head: RelationHead = dataclasses.field(default_factory=RelationHead)
    duplicate_removal: DuplicateRemovalHead = dataclasses.field(
        default_factory=DuplicateRemovalHead)


@dataclasses.dataclass
class RelationRCNNTask(maskrcnn_config.MaskRCNNTask):
    """`MaskRCNNTask` whose model is a `RelationRCNN`."""

    model: RelationRCNN = dataclasses.field(default_factory=RelationRCNN)


@task_factory.register_task_cls(RelationRCNNTask)
class RelationRCNNTaskImpl(maskrcnn.MaskRCNNTask):
    """Model Garden's Mask R-CNN task building `RelationMaskRCNNModel`.

    Inputs and steps are the stock task's: the model's outputs have the same
    keys. With the learned duplicate removal, its loss joins the losses and
    the training metrics as `duplicate_removal_loss`.
    """

    def build_model(self):
        model_config = self.task_config.model
        input_specs = tf_keras.layers.InputSpec(shape=[None] + model_config.input_size)
        weight_decay = self.task_config.losses.l2_weight_decay
        # Half, as the stock task: tf_keras' l2 is sum(w^2), tf.nn.l2_loss half that.
        l2_regularizer = tf_keras.regularizers.l2(weight_decay / 2.0) if weight_decay else None
        model = build_relation_rcnn(input_specs, model_config, l2_regularizer)
        if self.task_config.freeze_backbone:
            model.backbone.trainable = False
        # Builds the model with the warm-up call of the stock task.
        model(tf_keras.Input(model_config.input_size),
              image_shape=tf_keras.layers.Input([2]), training=False)
        return model

    def build_losses(self, outputs, labels, aux_losses=None):
        losses = super().build_losses(outputs, labels, aux_losses)
        if "duplicate_removal_scores" not in outputs:
            return losses
        learned_nms = self.task_config.model.duplicate_removal
        valid = tf.cast(outputs["duplicate_removal_valid"], tf.bool)  # the step casts to float
        # Ground-truth classes 1..K-1 are the score columns 0..K-2; padding (-1) matches none.
        targets = duplicate_removal_targets(
            outputs["duplicate_removal_boxes"], outputs["duplicate_removal_initial_scores"],
            valid, labels["gt_boxes"], labels["gt_classes"] - 1,
            tuple(learned_nms.iou_thresholds))
        loss = duplicate_removal_loss(outputs["duplicate_removal_scores"], targets, valid,
                                      learned_nms.positive_weight)
        weighted = learned_nms.loss_weight * loss
        losses["model_loss"] += weighted
        losses["total_loss"] += self.task_config.losses.loss_weight * weighted
        losses["duplicate_removal_loss"] = loss
        return losses

    def build_metrics(self, training=True):
        metrics = super().build_metrics(training)
        if training and self.task_config.model.duplicate_removal.use_duplicate_removal:
            metrics.append(tf_keras.metrics.Mean("duplicate_removal_loss", dtype=tf.float32))
        return metrics


def relation_rcnn_experiment(stock_name):
    """The stock detection experiment `stock_name` with a `RelationRCNNTask`.

    Settings of the paper: 2fc head of 1024 with 16-head relation modules,
    300 test proposals.
    """
    base = exp_factory.get_exp_config(stock_name)
    task = RelationRCNNTask()
    task.override(base.task.as_dict(), is_strict=False)
    config = RelationExperimentConfig(task=task, trainer=base.trainer, runtime=base.runtime,
                                      restrictions=base._restrictions)
    config.task.model.detection_head.override({"num_convs": 0, "num_fcs": 2, "fc_dims": 1024})
    config.task.model.roi_generator.test_num_proposals = 300
    return config


def backbone_experiment(stock_name, backbone):
    """The stock experiment `stock_name` with `backbone` (config validated by keras-relnet)."""
    base = exp_factory.get_exp_config(stock_name)
    config = RelationExperimentConfig(task=base.task, trainer=base.trainer, runtime=base.runtime,
                                      restrictions=base._restrictions)
    config.task.model.backbone = backbone
    return config


@exp_factory.register_config_factory("fasterrcnn_relation_resnetfpn_coco")
def fasterrcnn_relation_resnetfpn_coco():
    """Faster R-CNN ResNet-50-FPN, 2fc+RM head (Relation Networks, CVPR 2018)."""
    return relation_rcnn_experiment("fasterrcnn_resnetfpn_coco")


@exp_factory.register_config_factory("fasterrcnn_relation_e2e_resnetfpn_coco")
def fasterrcnn_relation_e2e_resnetfpn_coco():
    """The end-to-end relation Faster R-CNN: the 2fc+RM head and the learned
    duplicate removal, trained jointly, in place of NMS (CVPR 2018)."""
    config = relation_rcnn_experiment("fasterrcnn_resnetfpn_coco")
    config.task.model.duplicate_removal.override(
        {"use_duplicate_removal": True, "top_k": 150})  # the paper's n with FPN
    return config


@exp_factory.register_config_factory("maskrcnn_gc_resnetfpn_coco")
def maskrcnn_gc_resnetfpn_coco():
    """Mask R-CNN with GC-ResNet-50 (r16, c3-c5) + FPN (GCNet)."""
    return backbone_experiment("maskrcnn_resnetfpn_coco", Backbone(
        type="resnet_context",
        resnet_context=ResNetContextBackbone(model_id=50, context_block="gc")))


@exp_factory.register_config_factory("maskrcnn_lrnet_fpn_coco")
def maskrcnn_lrnet_fpn_coco():
    """Mask R-CNN with LR-Net-50 + FPN."""
    return backbone_experiment("maskrcnn_resnetfpn_coco",
                               Backbone(type="lrnet", lrnet=LRNetBackbone(model_id=50)))
