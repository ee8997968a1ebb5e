"""The `RelationBoxHead` Keras layer: the 2fc box head with object relation modules."""

import keras
import tensorflow as tf

from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.layers.object_relation import ObjectRelation
from keras_relnet.ops import checks, object_inputs


@keras.saving.register_keras_serializable(package="keras_relnet")
class RelationBoxHead(BoxInputLayer):
    """The "2fc+RM" box head of Relation Networks for Object Detection.

    Per RoI: flatten -> fc -> (+ relation) -> ReLU, `num_fcs` times, then a
    classifier and a box regressor:

        h = ReLU(fc_k(h) + RM_k(fc_k(h), boxes))

    Each relation module has its own weights; with `use_relation=False` this
    is the plain 2fc head (the baseline). Usable in any two-stage detector:
    it consumes RoIAlign crops and proposal boxes.

    Args:
        num_classes: classes including background (the Model Garden convention).
        fc_dim: width of each fc layer (paper: 1024).
        num_fcs: number of fc layers (paper: 2).
        use_relation: add an `ObjectRelation` after every fc.
        num_heads, geometry_dim, box_format, size_offset, query_chunk_size:
            the `ObjectRelation` arguments.
        class_agnostic_boxes: one box regression for all classes instead of
            one per class.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        roi_features: `[batch, rois, height, width, channels]` (e.g. 7x7 crops).
        boxes: `[batch, rois, 4]` proposal boxes.
        roi_mask: optional `[batch, rois]` bool, False for padding RoIs (they
            are not keys of the relation modules).

    Returns:
        `(class_logits [batch, rois, num_classes], box_deltas [batch, rois,
        4 * num_classes])` (`4` with `class_agnostic_boxes`).

    Example:
    >>> head = RelationBoxHead(num_classes=3, fc_dim=32, num_heads=4)
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 1, 1, 2]]])
    >>> logits, deltas = head(tf.ones([1, 2, 7, 7, 8]), boxes)
    >>> logits.shape, deltas.shape
    (TensorShape([1, 2, 3]), TensorShape([1, 2, 12]))
    """

    def __init__(self, num_classes, fc_dim=1024, num_fcs=2, use_relation=True, num_heads=16,
                 geometry_dim=64, box_format="yxyx", size_offset=0.0, query_chunk_size=256,
                 class_agnostic_boxes=False, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = checks.check_positive_int("num_classes", num_classes)
        self.fc_dim = checks.check_positive_int("fc_dim", fc_dim)
        self.num_fcs = checks.check_positive_int("num_fcs", num_fcs)
        self.use_relation = bool(use_relation)
        self.class_agnostic_boxes = bool(class_agnostic_boxes)
        self.relation_config = dict(
            num_heads=num_heads, geometry_dim=geometry_dim, box_format=box_format,
            size_offset=size_offset, query_chunk_size=query_chunk_size)
        dense = lambda units, name, stddev=None: head_dense(
            keras.layers, units, name, stddev, dtype=self.dtype_policy)
        self.fcs = [dense(fc_dim, f"fc{index + 6}") for index in range(num_fcs)]
        self.relations = [
            ObjectRelation(**self.relation_config, name=f"relation{index + 1}",
                           dtype=self.dtype_policy)
            for index in range(num_fcs)] if self.use_relation else []
        self.classifier = dense(num_classes, "class_logits", 0.01)
        self.box_regressor = dense(4 * (1 if class_agnostic_boxes else num_classes),
                                   "box_deltas", 0.001)

    def build(self, roi_features_shape, boxes_shape, roi_mask_shape=None):
        features = checks.check_rank("roi_features", roi_features_shape, 5,
                                     "[batch, rois, height, width, channels]")
        if None in features[2:]:
            raise ValueError("`roi_features` must have known crop height, width and channels; "
                             f"received shape {features}.")
        width = features[2] * features[3] * features[4]
        for fc, relation in zip(self.fcs, self.relations or [None] * self.num_fcs):
            fc.build((None, None, width))
            width = self.fc_dim
            if relation is not None:
                relation.build((None, None, width), boxes_shape, roi_mask_shape)
        self.classifier.build((None, None, width))
        self.box_regressor.build((None, None, width))

    def call(self, roi_features, boxes, roi_mask=None):
        roi_features, boxes, roi_mask = check_box_head_inputs(roi_features, boxes, roi_mask)
        shape = tf.shape(roi_features)
        hidden = tf.reshape(roi_features, [shape[0], shape[1], -1])
        for fc, relation in zip(self.fcs, self.relations or [None] * self.num_fcs):
            hidden = fc(hidden)
            if relation is not None:
                hidden += relation(hidden, boxes, key_mask=roi_mask)
            hidden = tf.nn.relu(hidden)
        return self.classifier(hidden), self.box_regressor(hidden)

    def compute_output_shape(self, roi_features_shape, boxes_shape, roi_mask_shape=None):
        batch, rois = tuple(roi_features_shape)[:2]
        boxes = 4 * (1 if self.class_agnostic_boxes else self.num_classes)
        return (batch, rois, self.num_classes), (batch, rois, boxes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            fc_dim=self.fc_dim,
            num_fcs=self.num_fcs,
            use_relation=self.use_relation,
            class_agnostic_boxes=self.class_agnostic_boxes,
            **self.relation_config,
        )
        return config


def check_box_head_inputs(roi_features, boxes, roi_mask=None, boxes_name="boxes"):
    """Checks that a box head's inputs agree on the batch and the RoIs.

    Shared by the Keras 3 head and the tf_keras one of `keras_relnet.garden`
    (whose boxes are `rois`).

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
    >>> check_box_head_inputs(tf.zeros([1, 3, 7, 7, 8]), tf.zeros([1, 2, 4]))
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


def head_dense(layers, units, name, stddev=None, **kwargs):
    """A Dense layer of the box head: N(0, stddev) kernel when given, else Glorot.

    Shared by the Keras 3 head and the tf_keras one of `keras_relnet.garden`.

    Args:
        layers: `keras.layers` or `tf_keras.layers`.
        units, name: of the Dense layer.
        stddev: standard deviation of the kernel (the classifier 0.01, the box
            regressor 0.001 in the paper); None for the fc layers.
        **kwargs: more Dense arguments.
    """
    initializer = ({"class_name": "RandomNormal", "config": {"stddev": stddev}}
                   if stddev else "glorot_uniform")
    return layers.Dense(units, name=name, kernel_initializer=initializer, **kwargs)
