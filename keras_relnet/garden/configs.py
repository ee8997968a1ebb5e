"""Model Garden configs: the relation backbones, their checks, the registered experiments.

Every registration of `keras_relnet.garden` happens once, when the package is
imported (Model Garden raises on a second registration of a name).
"""

import dataclasses
from typing import List

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.modeling import hyperparams
from official.vision.configs import backbones
from official.vision.configs import image_classification
from official.vision.configs import maskrcnn as maskrcnn_config

from keras_relnet.applications.common import STAGE_DEPTHS
from keras_relnet.applications.context_plan import context_plan
from keras_relnet.families.box_head import BoxHeadOptions
from keras_relnet.families.duplicate_removal import DuplicateRemovalOptions
from keras_relnet.families.local_relation import LocalRelationOptions
from keras_relnet.ops import checks


@dataclasses.dataclass
class LRNetBackbone(hyperparams.Config):
    """The `lrnet` backbone: LR-Net-26/50/101, optionally with context blocks.

    `context_block` "" means none; `context_stages` empty means the block's
    default stages (gc/snl c3-c5, se c2-c5, nl c4).
    """

    model_id: int = 50
    width_multiplier: float = 1.0
    kernel_size: int = 7
    channels_per_group: int = 8
    zero_init_residual: bool = True
    implementation: str = "auto"
    context_block: str = ""
    context_stages: List[int] = dataclasses.field(default_factory=list)
    context_ratio: float = 1 / 16


@dataclasses.dataclass
class ResNetContextBackbone(hyperparams.Config):
    """The `resnet_context` backbone: ResNet-26/50/101 with GC, SNL, SE or NL blocks."""

    model_id: int = 50
    context_block: str = "gc"
    context_stages: List[int] = dataclasses.field(default_factory=list)
    context_ratio: float = 1 / 16


@dataclasses.dataclass
class Backbone(backbones.Backbone):
    """Model Garden's backbone choice, plus `lrnet` and `resnet_context`."""

    lrnet: LRNetBackbone = dataclasses.field(default_factory=LRNetBackbone)
    resnet_context: ResNetContextBackbone = dataclasses.field(
        default_factory=ResNetContextBackbone)


@dataclasses.dataclass
class RelationExperimentConfig(cfg.ExperimentConfig):
    """An `ExperimentConfig` whose `validate()` also checks the relation options."""

    def validate(self):
        super().validate()
        check_backbone(self.task.model.backbone, "task.model.backbone")
        if isinstance(self.task.model, maskrcnn_config.MaskRCNN):
            check_detection_model(self.task.model, "task.model")


def check_backbone(backbone, path):
    """Raises a `ValueError` naming the option when a relation backbone's config is invalid.

    Args:
        backbone: a `Backbone` config.
        path: where it is in the experiment, for the message.

    Example:
    >>> check_backbone(Backbone(type="lrnet", lrnet=LRNetBackbone(model_id=27)), "backbone")
    Traceback (most recent call last):
    ...
    ValueError: backbone.lrnet.model_id must be one of [26, 50, 101]; received 27.
    """
    if backbone.type not in ("lrnet", "resnet_context"):
        return
    config = backbone.get()
    path = f"{path}.{backbone.type}"
    if config.model_id not in STAGE_DEPTHS:
        raise ValueError(f"{path}.model_id must be one of {sorted(STAGE_DEPTHS)}; "
                         f"received {config.model_id}.")
    try:
        context_plan(config.context_block or None, tuple(config.context_stages) or None,
                     config.context_ratio)
        if backbone.type == "lrnet":
            checks.check_positive_number("width_multiplier", config.width_multiplier)
            LocalRelationOptions(kernel_size=config.kernel_size,
                                 channels_per_group=config.channels_per_group,
                                 implementation=config.implementation)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def check_detection_model(model, path):
    """Raises a `ValueError` naming the option when a detection model config is invalid.

    Checks that the input size is a multiple of `2**max_level` (else FPN fails
    deep in the build) and, with a relation head, that its heads divide the fc
    width and that the head has no convolutions.

    Args:
        model: a `MaskRCNN` config (or a `RelationRCNN`).
        path: where it is in the experiment, for the message.
    """
    stride = 2 ** model.max_level
    if any(size % stride for size in model.input_size[:2]):
        raise ValueError(
            f"{path}.input_size {list(model.input_size)} must be a multiple of "
            f"2**max_level = {stride} in height and width (max_level={model.max_level}).")
    learned_nms = getattr(model, "duplicate_removal", None)
    if learned_nms is not None and learned_nms.use_duplicate_removal:
        check_duplicate_removal(learned_nms, f"{path}.duplicate_removal")
    relation = getattr(model, "relation_head", None)
    if relation is None or not relation.use_relation:
        return
    head = model.detection_head
    try:
        BoxHeadOptions(model.num_classes, fc_dim=head.fc_dims, num_fcs=head.num_fcs,
                       num_heads=relation.num_relation_heads, geometry_dim=relation.geometry_dim,
                       query_chunk_size=relation.query_chunk_size)
    except ValueError as error:
        raise ValueError(f"{path}.relation_head (fc_dim: {path}.detection_head.fc_dims, "
                         f"num_heads: num_relation_heads): {error}") from None
    if model.detection_head.num_convs:
        raise ValueError(
            f"{path}.detection_head.num_convs must be 0 with the relation head (the 2fc "
            f"head of the paper); received {model.detection_head.num_convs}.")


def check_duplicate_removal(config, path):
    """Raises a `ValueError` naming the option when the duplicate removal config is invalid.

    Args:
        config: a `DuplicateRemovalHead` config.
        path: where it is in the experiment, for the message.
    """
    try:
        DuplicateRemovalOptions(
            top_k=config.top_k, iou_thresholds=config.iou_thresholds,
            embedding_dim=config.embedding_dim, rank_dim=config.rank_dim,
            num_heads=config.num_heads, key_dim=config.key_dim,
            geometry_dim=config.geometry_dim, query_chunk_size=config.query_chunk_size,
            score_threshold=config.score_threshold)
        checks.check_positive_number("positive_weight", config.positive_weight)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def imagenet_experiment(backbone, epochs=100, batch_size=256):
    """`resnet_imagenet` with `backbone` and the LR-Net/GCNet recipe.

    SGD momentum 0.9, 0.1 per 256 images, 5 epochs of linear warm-up, cosine
    decay to 0, L2 1e-4, label smoothing 0.1; TPU-style shards (labels
    1..1000, 1001 classes), as Model Garden reads them.

    Args:
        backbone: a `Backbone` config.
        epochs: training epochs.
        batch_size: global training and evaluation batch.

    Returns:
        A `RelationExperimentConfig`.
    """
    base = exp_factory.get_exp_config("resnet_imagenet")
    config = RelationExperimentConfig(task=base.task, trainer=base.trainer,
                                      runtime=base.runtime, restrictions=base._restrictions)
    config.task.model.backbone = backbone
    config.task.losses.label_smoothing = 0.1
    steps_per_epoch = image_classification.IMAGENET_TRAIN_EXAMPLES // batch_size
    learning_rate = 0.1 * batch_size / 256
    config.task.train_data.global_batch_size = batch_size
    config.task.validation_data.global_batch_size = batch_size
    config.trainer.override({
        "steps_per_loop": steps_per_epoch,
        "summary_interval": steps_per_epoch,
        "checkpoint_interval": steps_per_epoch,
        "validation_interval": steps_per_epoch,
        "train_steps": epochs * steps_per_epoch,
        "validation_steps": image_classification.IMAGENET_VAL_EXAMPLES // batch_size,
        "optimizer_config": {
            "learning_rate": {
                "type": "cosine",
                "cosine": {"initial_learning_rate": learning_rate,
                           "decay_steps": epochs * steps_per_epoch},
            },
            "warmup": {"type": "linear",
                       "linear": {"warmup_steps": 5 * steps_per_epoch,
                                  "warmup_learning_rate": 0.0}},
        },
    }, is_strict=False)
    return config


@exp_factory.register_config_factory("lrnet50_imagenet")
def lrnet50_imagenet():
    """LR-Net-50 on ImageNet (paper: 77.3 top-1)."""
    return imagenet_experiment(Backbone(type="lrnet", lrnet=LRNetBackbone(model_id=50)))


@exp_factory.register_config_factory("gc_resnet50_imagenet")
def gc_resnet50_imagenet():
    """GC-ResNet-50 (r16, c3-c5) on ImageNet (GCNet: 77.70 top-1)."""
    return imagenet_experiment(Backbone(
        type="resnet_context",
        resnet_context=ResNetContextBackbone(model_id=50, context_block="gc")))
