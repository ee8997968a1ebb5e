"""The relation box head family (2fc + relation modules): options, sub-layers, forward."""

import dataclasses
from typing import Any, List, NamedTuple, Optional

import tensorflow as tf

from keras_relnet.families.object_relation import ObjectRelationOptions
from keras_relnet.families.options import FamilyOptions
from keras_relnet.ops import checks, object_inputs

# Standard deviations of the output layers' N(0, s) kernels (the fcs: Glorot).
CLASSIFIER_STDDEV = 0.01
BOX_REGRESSOR_STDDEV = 0.001


@dataclasses.dataclass(frozen=True)
class BoxHeadOptions(FamilyOptions):
    """Options of the 2fc+RM box head (see `keras_relnet.layers.RelationBoxHead`).

    Example:
    >>> BoxHeadOptions(num_classes=3, fc_dim=30, num_heads=4)
    Traceback (most recent call last):
    ...
    ValueError: `num_heads` (4) must divide the feature width of `fc_dim`; received width 30.
    """

    num_classes: int
    fc_dim: int = 1024
    num_fcs: int = 2
    use_relation: bool = True
    num_heads: int = 16
    geometry_dim: int = 64
    box_format: str = "yxyx"
    size_offset: float = 0.0
    query_chunk_size: Optional[int] = 256
    class_agnostic_boxes: bool = False

    def normalised(self):
        values = dict(num_classes=checks.check_positive_int("num_classes", self.num_classes),
                      fc_dim=checks.check_positive_int("fc_dim", self.fc_dim),
                      num_fcs=checks.check_positive_int("num_fcs", self.num_fcs),
                      use_relation=bool(self.use_relation),
                      class_agnostic_boxes=bool(self.class_agnostic_boxes))
        relation = self.relation_options()
        values.update({key: getattr(relation, key) for key in _RELATION_KEYS})
        if values["use_relation"]:
            relation.check_width(values["fc_dim"], "fc_dim")
        return values

    def relation_options(self):
        """The `ObjectRelationOptions` of each relation module."""
        return ObjectRelationOptions(**{key: getattr(self, key) for key in _RELATION_KEYS})

    @property
    def box_outputs(self):
        """Width of the box deltas: 4, or 4 per class."""
        return 4 * (1 if self.class_agnostic_boxes else self.num_classes)


_RELATION_KEYS = ("num_heads", "geometry_dim", "box_format", "size_offset", "query_chunk_size")


class BoxHeadLayers(NamedTuple):
    """The sub-layers of a box head, in weight order."""

    fcs: List[Any]
    relations: List[Any]
    classifier: Any
    box_regressor: Any


def create_layers(layers, relation_class, options, kernel_regularizer=None,
                  output_names=("class_logits", "box_deltas"), **layer_kwargs):
    """Creates the fcs, relation modules, classifier and box regressor.

    Args:
        layers: `keras.layers` or `tf_keras.layers`.
        relation_class: the front's `ObjectRelation` class.
        options: `BoxHeadOptions`.
        kernel_regularizer: regulariser of every kernel (fcs and relations).
        output_names: names of the classifier and the box regressor.
        **layer_kwargs: more arguments of every sub-layer (e.g. `dtype`).

    Returns:
        `BoxHeadLayers`.
    """
    def dense(units, name, stddev=None):
        initializer = ({"class_name": "RandomNormal", "config": {"stddev": stddev}}
                       if stddev else "glorot_uniform")
        return layers.Dense(units, name=name, kernel_initializer=initializer,
                            kernel_regularizer=kernel_regularizer, **layer_kwargs)

    relation = options.relation_options().to_config()
    return BoxHeadLayers(
        fcs=[dense(options.fc_dim, f"fc{index + 6}") for index in range(options.num_fcs)],
        relations=[relation_class(**relation, kernel_regularizer=kernel_regularizer,
                                  name=f"relation{index + 1}", **layer_kwargs)
                   for index in range(options.num_fcs)] if options.use_relation else [],
        classifier=dense(options.num_classes, output_names[0], CLASSIFIER_STDDEV),
        box_regressor=dense(options.box_outputs, output_names[1], BOX_REGRESSOR_STDDEV),
    )


def check_inputs(roi_features, boxes, roi_mask=None, boxes_name="boxes"):
    """Checks that a box head's inputs agree on the batch and the RoIs.

    Args:
        roi_features: `[batch, rois, height, width, channels]`.
        boxes: `[batch, rois, 4]`.
        roi_mask: optional `[batch, rois]` bool.
        boxes_name: the boxes' argument name, for the messages.

    Returns:
        `(roi_features, boxes, roi_mask)`, past any run-time assertion.

    Raises:
        ValueError: naming the two arguments that disagree.

    Example:
    >>> check_inputs(tf.zeros([1, 3, 7, 7, 8]), tf.zeros([1, 2, 4]))
    Traceback (most recent call last):
    ...
    ValueError: `roi_features` and `boxes` must have the same rois size; received shapes (1, 3, 7, 7, 8) and (1, 2, 4).
    """
    object_inputs.check_rank("roi_features", roi_features, 5,
                             "[batch, rois, height, width, channels]")
    object_inputs.check_boxes(boxes_name, boxes)
    roi_features, boxes = object_inputs.check_same_dims(
        "roi_features", roi_features, boxes_name, boxes, ((0, 0, "batch"), (1, 1, "rois")))
    if roi_mask is not None:
        roi_features, roi_mask = object_inputs.check_object_mask(
            "roi_mask", roi_mask, "roi_features", roi_features)
    return roi_features, boxes, roi_mask


def forward(roi_features, boxes, head_layers, roi_mask=None, boxes_name="boxes"):
    """Per RoI: flatten, then `h = ReLU(fc(h) + RM(fc(h), boxes))` per fc, then the outputs.

    Args:
        roi_features: `[batch, rois, height, width, channels]` (known crop size).
        boxes: `[batch, rois, 4]` proposal boxes.
        head_layers: `BoxHeadLayers`.
        roi_mask: optional `[batch, rois]` bool, False for RoIs that are not
            relation keys.
        boxes_name: the boxes' argument name, for the messages.

    Returns:
        `(class_logits, box_deltas, features)`: features `[batch, rois, fc_dim]`
        are the last fc's (the duplicate removal network's appearance input).
    """
    roi_features, boxes, roi_mask = check_inputs(roi_features, boxes, roi_mask, boxes_name)
    _, _, height, width, channels = roi_features.shape
    shape = tf.shape(roi_features)
    hidden = tf.reshape(roi_features, [shape[0], shape[1], height * width * channels])
    relations = head_layers.relations or [None] * len(head_layers.fcs)
    for fc, relation in zip(head_layers.fcs, relations):
        hidden = fc(hidden)
        if relation is not None:
            hidden += relation(hidden, boxes=boxes, key_mask=roi_mask)
        hidden = tf.nn.relu(hidden)
    return head_layers.classifier(hidden), head_layers.box_regressor(hidden), hidden
