"""The `RelationBoxHead` Keras layer: the 2fc box head with object relation modules."""

import keras
import tensorflow as tf

from keras_relnet.families import box_head as family
from keras_relnet.families.box_head import BoxHeadOptions
from keras_relnet.families.options import FamilyFront
from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.layers.object_relation import ObjectRelation
from keras_relnet.ops import checks


@keras.saving.register_keras_serializable(package="keras_relnet")
class RelationBoxHead(FamilyFront, BoxInputLayer):
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
        kernel_regularizer: regularizer of every kernel (fcs and relation
            modules).
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
                 class_agnostic_boxes=False, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        options = BoxHeadOptions(num_classes, fc_dim, num_fcs, use_relation, num_heads,
                                 geometry_dim, box_format, size_offset, query_chunk_size,
                                 class_agnostic_boxes)
        self.set_family(options, kernel_regularizer)
        self.fcs, self.relations, self.classifier, self.box_regressor = family.create_layers(
            keras.layers, ObjectRelation, self.options, self.kernel_regularizer,
            dtype=self.dtype_policy)

    @property
    def head_layers(self):
        return family.BoxHeadLayers(self.fcs, self.relations, self.classifier,
                                    self.box_regressor)

    def build(self, roi_features_shape, boxes_shape, roi_mask_shape=None):
        features = checks.check_rank("roi_features", roi_features_shape, 5,
                                     "[batch, rois, height, width, channels]")
        if None in features[2:]:
            raise ValueError("`roi_features` must have known crop height, width and channels; "
                             f"received shape {features}.")
        width = features[2] * features[3] * features[4]
        for fc, relation in zip(self.fcs, self.relations or [None] * len(self.fcs)):
            fc.build((None, None, width))
            width = self.options.fc_dim
            if relation is not None:
                relation.build((None, None, width), boxes_shape, roi_mask_shape)
        self.classifier.build((None, None, width))
        self.box_regressor.build((None, None, width))

    def call(self, roi_features, boxes, roi_mask=None):
        return family.forward(roi_features, boxes, self.head_layers, roi_mask)[:2]

    def compute_output_shape(self, roi_features_shape, boxes_shape, roi_mask_shape=None):
        batch, rois = tuple(roi_features_shape)[:2]
        return (batch, rois, self.options.num_classes), (batch, rois, self.options.box_outputs)
