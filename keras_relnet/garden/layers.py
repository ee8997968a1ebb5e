"""tf_keras (Keras 2) fronts of the relation layers, for TF Model Garden.

Model Garden is tf_keras: a Keras 3 layer inside it is silently untracked (no
trainable variables, not checkpointed). These layers are thin fronts over the
families of `keras_relnet.families`, as the Keras 3 layers are: the same
options, the same weights (names, order) and the same forward, so
`garden_layer.set_weights(keras3_layer.get_weights())` moves weights both ways
and the outputs agree.

Arguments are those of the Keras 3 layer of the same name;
`kernel_regularizer` takes a tf_keras regulariser.
"""

import tensorflow as tf
import tf_keras

from keras_relnet.families import box_head, duplicate_removal, global_context, local_relation
from keras_relnet.families import non_local, object_relation, squeeze_excitation
from keras_relnet.families.options import FamilyFront
from keras_relnet.ops import checks
from keras_relnet.ops.duplicate_removal import learned_detections

_PACKAGE = "keras_relnet_garden"


class _FamilyLayer(FamilyFront, tf_keras.layers.Layer):
    """A tf_keras front over a family: its options, weights and forward."""

    family = None  # the module in keras_relnet.families
    options_class = None
    regularizers = tf_keras.regularizers

    def __init__(self, kernel_regularizer=None, **kwargs):
        options, base = self.options_class.split(kwargs)
        super().__init__(**base)
        self.set_family(options, kernel_regularizer)


class _ImageFamilyLayer(_FamilyLayer):
    """A front over an image family: NHWC inputs (Model Garden's layout)."""

    def __init__(self, data_format="channels_last", **kwargs):
        if data_format != "channels_last":
            raise ValueError("Model Garden layers take NHWC inputs: `data_format` must be "
                             f"'channels_last'; received {data_format!r}.")
        super().__init__(**kwargs)

    def build(self, input_shape):
        shape = checks.check_rank("inputs", tuple(input_shape), 4,
                                  "[batch, height, width, channels]")
        self.family_weights = self.family.create_weights(
            self.add_weight, self.options, checks.checked_channels("inputs", shape),
            self.kernel_regularizer)
        super().build(input_shape)

    def call(self, inputs):
        outputs = self.family.forward(inputs, self.family_weights, self.options)
        return outputs[0] if isinstance(outputs, tuple) else outputs

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)

    def get_config(self):
        return {**super().get_config(), "data_format": "channels_last"}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalRelation2D(_ImageFamilyLayer):
    """tf_keras `LocalRelation2D` (see `keras_relnet.layers.LocalRelation2D`).

    Example:
    >>> LocalRelation2D(kernel_size=3, channels_per_group=4)(tf.ones((1, 6, 6, 8))).shape
    TensorShape([1, 6, 6, 8])
    """

    family = local_relation
    options_class = local_relation.LocalRelationOptions

    def build(self, input_shape):
        self.options.groups(checks.checked_channels("inputs", tuple(input_shape)), input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = tf.TensorShape(input_shape).as_list()
        size = self.options.output_spatial_size
        return tf.TensorShape([batch, size(height), size(width), channels])


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalContext(_ImageFamilyLayer):
    """tf_keras `GlobalContext` (see `keras_relnet.layers.GlobalContext`).

    Example:
    >>> GlobalContext(ratio=1 / 4)(tf.ones((1, 5, 5, 8))).shape
    TensorShape([1, 5, 5, 8])
    """

    family = global_context
    options_class = global_context.GlobalContextOptions


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class SimplifiedNonLocal2D(GlobalContext):
    """tf_keras `SimplifiedNonLocal2D` (see `keras_relnet.layers.SimplifiedNonLocal2D`)."""

    def __init__(self, **kwargs):
        options = global_context.simplified_non_local_options(kwargs)
        super().__init__(**options.to_config(), **kwargs)

    def get_config(self):
        config = super().get_config()
        for fixed in global_context.SIMPLIFIED_NON_LOCAL_FIXED:
            config.pop(fixed)
        return config


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class SqueezeExcitation(_ImageFamilyLayer):
    """tf_keras `SqueezeExcitation` (see `keras_relnet.layers.SqueezeExcitation`)."""

    family = squeeze_excitation
    options_class = squeeze_excitation.SqueezeExcitationOptions


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class NonLocal2D(_ImageFamilyLayer):
    """tf_keras `NonLocal2D` (see `keras_relnet.layers.NonLocal2D`)."""

    family = non_local
    options_class = non_local.NonLocalOptions


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class ObjectRelation(_FamilyLayer):
    """tf_keras `ObjectRelation` (see `keras_relnet.layers.ObjectRelation`).

    Boxes and the key mask are keyword arguments: tf_keras casts only the first
    positional argument to the compute dtype, so pixel boxes keep float32.

    Example:
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 1, 1, 2], [1, 1, 2, 2]]])
    >>> ObjectRelation(num_heads=4)(tf.ones([1, 3, 32]), boxes=boxes).shape
    TensorShape([1, 3, 32])
    """

    family = object_relation
    options_class = object_relation.ObjectRelationOptions

    def build(self, input_shape):
        self.family_weights = object_relation.create_weights(
            self.add_weight, self.options, int(input_shape[-1]), self.kernel_regularizer)
        super().build(input_shape)

    def call(self, features, boxes=None, key_mask=None):
        return object_relation.forward(features, boxes, self.family_weights, self.options,
                                       key_mask=key_mask)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


# Model Garden's names of the box head options (its `DetectionHead` config).
_BOX_HEAD_NAMES = {"fc_dims": "fc_dim", "num_relation_heads": "num_heads",
                   "class_agnostic_bbox_pred": "class_agnostic_boxes"}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class RelationDetectionHead(_FamilyLayer):
    """The 2fc+RM box head for Model Garden's Faster/Mask R-CNN.

    The tf_keras twin of `keras_relnet.layers.RelationBoxHead` (same weights,
    same forward): per RoI, flatten -> `fc -> + relation -> ReLU` `num_fcs`
    times, then the class scores and box deltas. `RelationMaskRCNNModel` calls
    it as `head(roi_features, rois=rois, roi_mask=mask)`: the boxes go by
    keyword so tf_keras never casts them to a 16-bit compute dtype.

    Args:
        num_classes: classes including background.
        fc_dims: width of each fc layer (paper: 1024).
        num_fcs: fc layers (paper: 2).
        use_relation: add an object relation module after every fc.
        num_relation_heads: heads of each relation module (paper: 16); must
            divide `fc_dims`.
        geometry_dim: size of the geometry embedding.
        query_chunk_size: relation queries per chunk (bounds memory).
        class_agnostic_bbox_pred: one box regression for all classes.
        kernel_regularizer: tf_keras regulariser of every kernel (fcs and
            relation modules).
        **kwargs: base layer arguments.

    Example:
    >>> head = RelationDetectionHead(num_classes=3, fc_dims=32, num_relation_heads=4)
    >>> rois = tf.constant([[[0.0, 0, 10, 10], [0, 10, 10, 20]]])
    >>> scores, boxes = head(tf.ones([1, 2, 7, 7, 8]), rois=rois)
    >>> scores.shape, boxes.shape
    (TensorShape([1, 2, 3]), TensorShape([1, 2, 12]))
    """

    options_class = box_head.BoxHeadOptions

    def __init__(self, num_classes, fc_dims=1024, num_fcs=2, use_relation=True,
                 num_relation_heads=16, geometry_dim=64, query_chunk_size=256,
                 class_agnostic_bbox_pred=False, kernel_regularizer=None, **kwargs):
        super().__init__(
            num_classes=num_classes, fc_dim=fc_dims, num_fcs=num_fcs, use_relation=use_relation,
            num_heads=num_relation_heads, geometry_dim=geometry_dim,
            query_chunk_size=query_chunk_size, class_agnostic_boxes=class_agnostic_bbox_pred,
            kernel_regularizer=kernel_regularizer, **kwargs)
        self.fcs, self.relations, self.classifier, self.box_regressor = box_head.create_layers(
            tf_keras.layers, ObjectRelation, self.options, self.kernel_regularizer,
            output_names=("detection-scores", "detection-boxes"))

    def call(self, roi_features, rois=None, roi_mask=None, training=None,
             return_features=False):
        """Class scores and box deltas (and, if asked, the last fc's features).

        Args:
            roi_features: `[batch, rois, h, w, channels]`.
            rois: `[batch, rois, 4]` boxes (yxyx) for the relation geometry.
            roi_mask: optional `[batch, rois]` bool, False for RoIs that are
                not relation keys.
            training: unused (no dropout or batch norm).
            return_features: also return the `[batch, rois, fc_dims]` features
                (the duplicate removal network's appearance input).

        Returns:
            `(class_outputs, box_outputs)` or `(class_outputs, box_outputs, features)`.
        """
        head_layers = box_head.BoxHeadLayers(list(self.fcs), list(self.relations),
                                             self.classifier, self.box_regressor)
        outputs = box_head.forward(roi_features, rois, head_layers, roi_mask, boxes_name="rois")
        return outputs if return_features else outputs[:2]

    def get_config(self):
        config = super().get_config()
        for garden_name, name in _BOX_HEAD_NAMES.items():
            config[garden_name] = config.pop(name)
        for fixed in ("box_format", "size_offset"):  # Model Garden's boxes: yxyx pixels
            config.pop(fixed)
        return config


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class DuplicateRemoval(_FamilyLayer):
    """tf_keras `DuplicateRemoval` (see `keras_relnet.layers.DuplicateRemoval`).

    The learned NMS of the end-to-end relation detector: same sub-layers,
    weight order and forward (`families.duplicate_removal.forward`) as the
    Keras 3 layer. The head features come first (tf_keras casts them to the
    compute dtype); scores, boxes and the RoI mask go by keyword and keep
    their dtype.

    Args:
        kernel_regularizer: tf_keras regulariser of every kernel.
        **kwargs: the arguments of the Keras 3 `DuplicateRemoval` and the base
            layer arguments.

    Example:
    >>> layer = DuplicateRemoval(top_k=4, embedding_dim=16, rank_dim=32, num_heads=2, key_dim=4)
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 0, 1, 0.9], [2, 2, 3, 3]]])
    >>> scores = tf.constant([[[0.9, 0.1], [0.8, 0.1], [0.3, 0.6]]])
    >>> layer(tf.ones([1, 3, 8]), scores=scores, boxes=boxes)["scores"].shape
    TensorShape([1, 2, 4, 5])
    """

    options_class = duplicate_removal.DuplicateRemovalOptions

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        (self.rank_embedding, self.appearance_embedding, self.relation,
         self.classifier) = duplicate_removal.create_layers(
            tf_keras.layers, ObjectRelation, self.options, self.kernel_regularizer)

    def call(self, features, scores=None, boxes=None, roi_mask=None):
        """Candidates and their refined scores (see `families.duplicate_removal.forward`).

        Args:
            features: `[batch, rois, D]` head features.
            scores: `[batch, rois, classes]` class probabilities without background.
            boxes: `[batch, rois, classes, 4]` or `[batch, rois, 4]`.
            roi_mask: optional `[batch, rois]` bool, False for RoIs that are
                not candidates.

        Returns:
            The dict of the Keras 3 layer's `call`.
        """
        sub_layers = duplicate_removal.DuplicateRemovalLayers(
            self.rank_embedding, self.appearance_embedding, self.relation, self.classifier)
        return duplicate_removal.forward(scores, boxes, features, sub_layers, self.options,
                                         roi_mask)

    def detect(self, features, scores=None, boxes=None, roi_mask=None):
        """Detections without NMS, in `tf.image.combined_non_max_suppression` form."""
        return learned_detections(self(features, scores=scores, boxes=boxes, roi_mask=roi_mask),
                                  self.options.max_detections, self.options.score_threshold)
