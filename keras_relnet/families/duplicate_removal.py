"""The duplicate removal family (learned NMS): options, sub-layers and forward."""

import dataclasses
from typing import Any, NamedTuple, Optional, Tuple

from keras_relnet.families.object_relation import ObjectRelationOptions
from keras_relnet.families.options import FamilyOptions
from keras_relnet.ops import checks
from keras_relnet.ops.duplicate_removal import IOU_THRESHOLDS, refine_candidates

EMBEDDING_STDDEV = 0.01  # N(0, 0.01) kernels of every Dense
THRESHOLD_BIAS = -3.0  # s1 starts near sigmoid(-3) = 0.05: most candidates are duplicates


@dataclasses.dataclass(frozen=True)
class DuplicateRemovalOptions(FamilyOptions):
    """Options of the duplicate removal network (see `keras_relnet.layers.DuplicateRemoval`).

    Example:
    >>> DuplicateRemovalOptions(embedding_dim=20, num_heads=8)
    Traceback (most recent call last):
    ...
    ValueError: `num_heads` (8) must divide the feature width of `embedding_dim`; received width 20.
    """

    top_k: int = 100
    iou_thresholds: Tuple[float, ...] = IOU_THRESHOLDS
    embedding_dim: int = 128
    rank_dim: int = 1024
    num_heads: int = 16
    key_dim: Optional[int] = 64
    geometry_dim: int = 64
    box_format: str = "yxyx"
    size_offset: float = 0.0
    query_chunk_size: Optional[int] = 32
    max_detections: int = 100
    score_threshold: float = 1e-3

    def normalised(self):
        thresholds = tuple(float(t) for t in self.iou_thresholds)
        if not thresholds or not all(0 < t < 1 for t in thresholds):
            raise ValueError("`iou_thresholds` must be a non-empty sequence of values in "
                             f"(0, 1); received {self.iou_thresholds!r}.")
        rank_dim = checks.check_positive_int("rank_dim", self.rank_dim)
        if rank_dim % 2:
            raise ValueError(f"`rank_dim` must be even (sines and cosines); received {rank_dim}.")
        embedding_dim = checks.check_positive_int("embedding_dim", self.embedding_dim)
        relation = self.relation_options()
        relation.check_width(embedding_dim, "embedding_dim")
        return dict(
            top_k=checks.check_positive_int("top_k", self.top_k),
            iou_thresholds=thresholds, embedding_dim=embedding_dim, rank_dim=rank_dim,
            max_detections=checks.check_positive_int("max_detections", self.max_detections),
            score_threshold=checks.check_finite_number("score_threshold", self.score_threshold),
            **{key: getattr(relation, key) for key in _RELATION_KEYS})

    def relation_options(self):
        """The `ObjectRelationOptions` of the (residual) relation module."""
        return ObjectRelationOptions(residual=True,
                                     **{key: getattr(self, key) for key in _RELATION_KEYS})


_RELATION_KEYS = ("num_heads", "key_dim", "geometry_dim", "box_format", "size_offset",
                  "query_chunk_size")


class DuplicateRemovalLayers(NamedTuple):
    """The sub-layers of the duplicate removal network, in weight order."""

    rank_embedding: Any
    appearance_embedding: Any
    relation: Any
    classifier: Any


def create_layers(layers, relation_class, options, kernel_regularizer=None, **layer_kwargs):
    """Creates the rank and appearance embeddings, the relation module and the classifier.

    Args:
        layers: `keras.layers` or `tf_keras.layers`.
        relation_class: the front's `ObjectRelation` class.
        options: `DuplicateRemovalOptions`.
        kernel_regularizer: regulariser of every kernel.
        **layer_kwargs: more arguments of every sub-layer (e.g. `dtype`).

    Returns:
        `DuplicateRemovalLayers`.
    """
    def dense(units, name, **extra):
        return layers.Dense(units, name=name, kernel_regularizer=kernel_regularizer,
                            kernel_initializer={"class_name": "RandomNormal",
                                                "config": {"stddev": EMBEDDING_STDDEV}},
                            **extra, **layer_kwargs)

    return DuplicateRemovalLayers(
        rank_embedding=dense(options.embedding_dim, "rank_embedding"),
        appearance_embedding=dense(options.embedding_dim, "appearance_embedding"),
        relation=relation_class(**options.relation_options().to_config(),
                                kernel_regularizer=kernel_regularizer, name="relation",
                                **layer_kwargs),
        classifier=dense(len(options.iou_thresholds), "threshold_logits",
                         bias_initializer={"class_name": "Constant",
                                           "config": {"value": THRESHOLD_BIAS}}),
    )


def forward(scores, boxes, features, sub_layers, options, roi_mask=None):
    """Candidates and their refined scores (see `ops.duplicate_removal.refine_candidates`).

    Args:
        scores: `[batch, rois, classes]` class probabilities without background.
        boxes: `[batch, rois, classes, 4]` or `[batch, rois, 4]`.
        features: `[batch, rois, D]` head features.
        sub_layers: `DuplicateRemovalLayers`.
        options: `DuplicateRemovalOptions`.
        roi_mask: optional `[batch, rois]` bool.

    Returns:
        The dict of `refine_candidates`.
    """
    relation = sub_layers.relation
    return refine_candidates(
        scores, boxes, features, options.top_k, options.rank_dim,
        sub_layers.appearance_embedding, sub_layers.rank_embedding,
        lambda x, candidate_boxes, mask: relation(x, boxes=candidate_boxes, key_mask=mask),
        sub_layers.classifier, roi_mask)
