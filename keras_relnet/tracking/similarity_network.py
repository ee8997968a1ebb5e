"""The spatial-temporal similarity network: the per-frame scoring model and
its training model, sharing one set of layers."""

import keras
import tensorflow as tf

from keras_relnet.layers.pair_similarity import PairSimilarity
from keras_relnet.layers.spatial_relation import SpatialRelation
from keras_relnet.layers.temporal_relation import TemporalRelation
from keras_relnet.ops import checks

FRAME_INPUTS = ("detection_features", "detection_boxes", "track_features", "track_boxes",
                "track_mask")
_LAYER_NAMES = ("spatial_relation", "temporal_relation", "pair_similarity")


def similarity_network(feature_dim=32, history=16, num_heads=4, relation_dim=32,
                       cosine_dim=32, geometry_units=16, hidden_units=(64,), use_geometry=True):
    """The functional model that scores one frame: every (tracklet, detection) pair.

    Inputs (a list in `FRAME_INPUTS` order, or a dict by name; batch = frames,
    usually 1):
        `detection_features [B, N, D]`, `detection_boxes [B, N, 4]` (xyxy),
        `track_features [B, M, T, D]` (the detection embeddings the model
        returned for each tracklet's past frames), `track_boxes [B, M, T, 4]`,
        `track_mask [B, M, T]` bool.

    Outputs (a list):
        `similarity [B, M, N]` in (0, 1) and `detection_embeddings [B, N, D]`
        (the detections related to each other by `SpatialRelation`: what a
        tracklet keeps for the frames to come).

    Args:
        feature_dim: D, the appearance feature width.
        history: T, the past frames each tracklet keeps.
        num_heads: heads of the spatial relation (divides D).
        relation_dim, cosine_dim, geometry_units, hidden_units: see `PairSimilarity`.
        use_geometry: the spatial relation's geometric term.

    Returns:
        A `keras.Model`.

    Example:
    >>> model = similarity_network(feature_dim=8, history=3, num_heads=2)
    >>> [tuple(output.shape) for output in model.outputs]
    [(None, None, None), (None, None, 8)]
    """
    feature_dim = checks.check_positive_int("feature_dim", feature_dim)
    history = checks.check_positive_int("history", history)
    inputs = dict(
        detection_features=keras.Input((None, feature_dim), name="detection_features"),
        detection_boxes=keras.Input((None, 4), name="detection_boxes"),
        track_features=keras.Input((None, history, feature_dim), name="track_features"),
        track_boxes=keras.Input((None, history, 4), name="track_boxes"),
        track_mask=keras.Input((None, history), dtype="bool", name="track_mask"),
    )
    spatial = SpatialRelation(num_heads=num_heads, use_geometry=use_geometry,
                              name="spatial_relation")
    temporal = TemporalRelation(name="temporal_relation")
    pairs = PairSimilarity(relation_dim=relation_dim, cosine_dim=cosine_dim,
                           geometry_units=geometry_units, hidden_units=hidden_units,
                           name="pair_similarity")
    embeddings = spatial(inputs["detection_features"], inputs["detection_boxes"])
    tracks = temporal(inputs["track_features"], inputs["track_mask"])
    similarity = pairs(tracks, embeddings, inputs["track_boxes"], inputs["track_mask"],
                       inputs["detection_boxes"])
    return keras.Model([inputs[name] for name in FRAME_INPUTS], [similarity, embeddings],
                       name="spatial_temporal_similarity")


def network_layers(model):
    """`(spatial, temporal, pairs)`: the three layers of a similarity network."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a similarity network (a keras.Model made by "
                         f"similarity_network, or the path of one saved as .keras); "
                         f"received {type(model).__name__}.")
    try:
        return tuple(model.get_layer(name) for name in _LAYER_NAMES)
    except ValueError as error:
        raise ValueError(f"`model` must be a similarity network (layers {_LAYER_NAMES}); "
                         f"{error}") from None


@keras.saving.register_keras_serializable(package="keras_relnet")
class SimilarityTrainer(keras.Model):
    """Trains a similarity network on frame samples (`pair_sampler.frame_samples`).

    A sample is one frame: its detections, the tracklets alive before it and
    the raw detections of the T frames before it. The spatial relation runs
    over every past frame, each tracklet gathers its own past detections, and
    the pair similarity scores every (tracklet, detection) pair, as the
    tracker does online. The frame model shares these weights.

    Args:
        frame_model: a `similarity_network` (its layers are trained in place).

    Example:
    >>> trainer = SimilarityTrainer(similarity_network(feature_dim=8, history=3, num_heads=2))
    >>> trainer.compile("adam", masked_binary_crossentropy)
    """

    def __init__(self, frame_model, **kwargs):
        super().__init__(**kwargs)
        self.frame_model = frame_model
        self.spatial, self.temporal, self.pairs = network_layers(frame_model)

    def call(self, samples):
        history = samples["history_features"]
        shape = tf.shape(history)
        frames, slots = shape[0] * shape[1], shape[2]
        flat = lambda t, *tail: tf.reshape(t, tf.stack([frames, slots, *tail]))
        embedded = self.spatial(flat(history, history.shape[-1]),
                                flat(samples["history_boxes"], 4),
                                flat(samples["history_mask"]))
        embedded = tf.reshape(embedded, tf.shape(history))
        index = samples["track_index"]  # [S, M, T], -1: not observed
        track_mask = index >= 0
        by_frame = tf.transpose(tf.maximum(index, 0), [0, 2, 1])  # [S, T, M]
        gather = lambda t: tf.transpose(tf.gather(t, by_frame, batch_dims=2), [0, 2, 1, 3])
        detections = self.spatial(samples["detection_features"], samples["detection_boxes"],
                                  samples["detection_mask"])
        tracks = self.temporal(gather(embedded), track_mask)
        return self.pairs(tracks, detections, gather(samples["history_boxes"]), track_mask,
                          samples["detection_boxes"], samples["detection_mask"])

    def get_config(self):
        return {**super().get_config(),
                "frame_model": keras.saving.serialize_keras_object(self.frame_model)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["frame_model"] = keras.saving.deserialize_keras_object(config["frame_model"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_relnet")
def masked_binary_crossentropy(labels, similarity):
    """Binary cross-entropy over the pairs whose label is 0 or 1 (-1: ignored).

    Args:
        labels: `[S, M, N]` float: 1 same identity, 0 another, -1 padding.
        similarity: `[S, M, N]` in (0, 1).

    Returns:
        The mean over the labelled pairs (0 when there are none).
    """
    labels = tf.cast(labels, tf.float32)
    similarity = tf.clip_by_value(tf.cast(similarity, tf.float32), 1e-6, 1 - 1e-6)
    labelled = tf.cast(labels >= 0, tf.float32)
    positive = tf.maximum(labels, 0.0)
    losses = -(positive * tf.math.log(similarity) + (1 - positive) * tf.math.log(1 - similarity))
    return tf.math.divide_no_nan(tf.reduce_sum(losses * labelled), tf.reduce_sum(labelled))
