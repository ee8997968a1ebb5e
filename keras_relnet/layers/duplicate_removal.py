"""The `DuplicateRemoval` Keras layer: learned NMS with relation modules."""

import keras
import tensorflow as tf

from keras_relnet.families import duplicate_removal as family
from keras_relnet.families.duplicate_removal import DuplicateRemovalOptions
from keras_relnet.families.options import FamilyFront
from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.layers.object_relation import ObjectRelation
from keras_relnet.ops import checks
from keras_relnet.ops.duplicate_removal import IOU_THRESHOLDS, learned_detections


@keras.saving.register_keras_serializable(package="keras_relnet")
class DuplicateRemoval(FamilyFront, BoxInputLayer):
    """Learned duplicate removal, the network that replaces NMS (CVPR 2018).

    Per class, the top `top_k` RoIs by score are the candidates. Each gets
    an appearance embedding (Dense of its head feature) plus an embedding of
    its score rank; a relation module among the candidates of the class
    (geometry + appearance) refines them, and `T` logistic classifiers
    (one per IoU threshold) give `s1`. The trained quantity is `s0 * s1`,
    `s0` the class score: gradients flow into it, which makes the detector
    end to end.

        x   = Dense_{D->E}(feature) + Dense_{R->E}(sinusoid(rank))
        x'  = ReLU(x + RM(x))                    (among the class's candidates)
        s1  = sigmoid(Dense_{E->T}(x'))          (final bias -3)

    `call` returns the candidates and their scores for training
    (`ops.duplicate_removal.duplicate_removal_targets` and
    `duplicate_removal_loss`); `detect` returns detections in the form of
    `tf.image.combined_non_max_suppression`, with the final score the mean
    over thresholds of `s0 * s1`, and no NMS at all.

    Args:
        top_k: candidates per class, n (paper: 100; 150 with FPN).
        iou_thresholds: the T thresholds of the classifiers.
        embedding_dim: E, width of the candidate embedding (paper: 128).
        rank_dim: size of the rank sinusoid (paper: 1024).
        num_heads, key_dim, geometry_dim, box_format, size_offset,
            query_chunk_size: the `ObjectRelation` arguments (paper: 16
            heads of key width 64).
        max_detections, score_threshold: what `detect` keeps.
        kernel_regularizer: regularizer of every kernel.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        scores: `[batch, rois, classes]` class probabilities without background.
        boxes: `[batch, rois, classes, 4]` class-specific or `[batch, rois, 4]`.
        features: `[batch, rois, D]` head features.
        roi_mask: optional `[batch, rois]` bool, False for padding RoIs.

    Returns:
        A dict: `scores` `[batch, classes, top_k, T]` (`s0 * s1`),
        `initial_scores` (s0) `[batch, classes, top_k]`, `boxes`
        `[batch, classes, top_k, 4]`, `valid` (bool) and `indices` (RoI index)
        `[batch, classes, top_k]`.

    Example:
    >>> layer = DuplicateRemoval(top_k=4, embedding_dim=16, rank_dim=32, num_heads=2,
    ...                          key_dim=4)
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 0, 1, 0.9], [2, 2, 3, 3]]])
    >>> scores = tf.constant([[[0.9, 0.1], [0.8, 0.1], [0.3, 0.6]]])
    >>> layer.detect(scores, boxes, tf.ones([1, 3, 8]))["nmsed_boxes"].shape
    TensorShape([1, 100, 4])
    """

    def __init__(self, top_k=100, iou_thresholds=IOU_THRESHOLDS, embedding_dim=128,
                 rank_dim=1024, num_heads=16, key_dim=64, geometry_dim=64, box_format="yxyx",
                 size_offset=0.0, query_chunk_size=32, max_detections=100,
                 score_threshold=1e-3, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        options = DuplicateRemovalOptions(
            top_k, iou_thresholds, embedding_dim, rank_dim, num_heads, key_dim, geometry_dim,
            box_format, size_offset, query_chunk_size, max_detections, score_threshold)
        self.set_family(options, kernel_regularizer)
        (self.rank_embedding, self.appearance_embedding, self.relation,
         self.classifier) = family.create_layers(keras.layers, ObjectRelation, self.options,
                                                 self.kernel_regularizer,
                                                 dtype=self.dtype_policy)

    def build(self, scores_shape, boxes_shape, features_shape, roi_mask_shape=None):
        scores = checks.check_rank("scores", scores_shape, 3, "[batch, rois, classes]")
        features = checks.check_rank("features", features_shape, 3, "[batch, rois, channels]")
        boxes = tuple(boxes_shape)
        if len(boxes) not in (3, 4) or boxes[-1] != 4 or (
                len(boxes) == 4 and None not in (boxes[2], scores[2]) and boxes[2] != scores[2]):
            raise ValueError("`boxes` must have shape [batch, rois, 4] or [batch, rois, classes, "
                             f"4] with classes = {scores[2]}; received shape {boxes}.")
        for name, shape in (("boxes", boxes), ("features", features)):
            if None not in (shape[1], scores[1]) and shape[1] != scores[1]:
                raise ValueError(f"`{name}` must have as many RoIs as `scores` ({scores[1]}); "
                                 f"received shape {shape}.")
        self.rank_embedding.build((None, self.rank_dim))
        self.appearance_embedding.build((None, None, features[-1]))
        self.relation.build((None, None, self.embedding_dim), (None, None, 4), (None, None))
        self.classifier.build((None, None, self.embedding_dim))

    def call(self, scores, boxes, features, roi_mask=None):
        sub_layers = family.DuplicateRemovalLayers(self.rank_embedding, self.appearance_embedding,
                                                   self.relation, self.classifier)
        return family.forward(scores, boxes, features, sub_layers, self.options, roi_mask)

    def detect(self, scores, boxes, features, roi_mask=None):
        """Detections, a drop-in for `tf.image.combined_non_max_suppression`.

        Args:
            scores, boxes, features, roi_mask: as in `call`.

        Returns:
            A dict with `nmsed_boxes [batch, max_detections, 4]`,
            `nmsed_scores`, `nmsed_classes` `[batch, max_detections]` and
            `valid_detections [batch]`.
        """
        return learned_detections(self(scores, boxes, features, roi_mask=roi_mask),
                                  self.max_detections, self.score_threshold)

    def compute_output_spec(self, scores, boxes, features, roi_mask=None):
        batch, classes = scores.shape[0], scores.shape[2]
        candidates = (batch, classes, self.top_k)
        return {
            "scores": keras.KerasTensor(candidates + (len(self.iou_thresholds),), "float32"),
            "initial_scores": keras.KerasTensor(candidates, scores.dtype),
            "boxes": keras.KerasTensor(candidates + (4,), boxes.dtype),
            "valid": keras.KerasTensor(candidates, "bool"),
            "indices": keras.KerasTensor(candidates, "int32"),
        }

    def compute_output_shape(self, scores_shape, boxes_shape, features_shape,
                             roi_mask_shape=None):
        candidates = (scores_shape[0], scores_shape[2], self.top_k)
        return {"scores": candidates + (len(self.iou_thresholds),),
                "initial_scores": candidates, "boxes": candidates + (4,),
                "valid": candidates, "indices": candidates}
