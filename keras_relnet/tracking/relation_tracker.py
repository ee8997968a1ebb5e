"""`RelationTracker`: online tracking with the learned spatial-temporal similarity."""

import collections

import numpy as np
import tensorflow as tf

from keras_relnet.tracking.mot_format import xywh_to_xyxy, xyxy_to_xywh
from keras_relnet.tracking.online_tracker import OnlineTracker, checked_detections
from keras_relnet.tracking.similarity_network import FRAME_INPUTS, network_layers


class RelationTracker(OnlineTracker):
    """Tracks objects with a spatial-temporal similarity network.

    One network call per frame: the frame's detections are related to each
    other (`SpatialRelation`), every tracklet pools its last T frames
    (`TemporalRelation`) and every (tracklet, detection) pair is scored
    (`PairSimilarity`); the Hungarian algorithm assigns on the scores. A
    tracklet keeps, for each of its last T frames, the embedding and box of
    its matched detection (or a missed frame).

    Args:
        model: a `similarity_network` model, or the path of one saved as `.keras`.
        match_threshold: the lowest similarity of a match.
        max_age: the missed frames a tracklet survives (below T, so that a
            tracklet still has an observed frame in its window); None:
            12, or T - 1 for a shorter history.
        birth_score: the lowest detection score that starts a tracklet.
        appearance: for `update(..., image=...)`: a function
            `(image, boxes [N, 4] xywh) -> features [N, D]`, e.g.
            `thumbnail_features`.

    Example:
    >>> from keras_relnet.tracking.similarity_network import similarity_network
    >>> tracker = RelationTracker(similarity_network(feature_dim=8, history=4, num_heads=2))
    >>> tracker.update([[0, 0, 10, 20]], features=np.ones((1, 8))).ids.tolist()
    [1]
    """

    def __init__(self, model, match_threshold=0.2, max_age=None, birth_score=0.5,
                 appearance=None):
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            import keras
            model = keras.models.load_model(model)
        network_layers(model)
        self.model = model
        self.history = model.get_layer("temporal_relation").input[0].shape[-2]
        self.feature_dim = model.get_layer("spatial_relation").input[0].shape[-1]
        if self.history < 2:
            raise ValueError(f"`model` must have a history of at least 2 frames (a tracklet "
                             f"that misses a frame still needs an observed one in its window); "
                             f"this one has {self.history}. Build it with "
                             f"similarity_network(history=2) or more.")
        if max_age is None:
            max_age = min(12, self.history - 1)
        super().__init__(match_threshold, max_age, birth_score)
        if self.max_age >= self.history:
            raise ValueError(f"`max_age` must be below the model's history ({self.history} "
                             f"frames); received {max_age}.")
        self.appearance = appearance
        specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
                 for name, tensor in zip(FRAME_INPUTS, model.inputs)]
        self._call = tf.function(lambda *inputs: model(list(inputs), training=False),
                                 input_signature=specs)

    def prepare(self, boxes, features, image, usable, count):
        if features is None:
            if image is None or self.appearance is None:
                raise ValueError("`update` needs `features` [N, D], or an `image` and a tracker "
                                 "made with `appearance`.")
            features = self.appearance(image, xyxy_to_xywh(boxes)) if len(boxes) else np.zeros(
                (0, self.feature_dim))
            features = np.asarray(features)
        else:
            features = np.asarray(features, dtype=np.float32)
            if features.shape != (count, self.feature_dim):
                raise ValueError(f"`features` must be [detections, {self.feature_dim}] = "
                                 f"({count}, {self.feature_dim}); received shape "
                                 f"{features.shape}.")
            features = features[usable]
        if not np.isfinite(features).all():
            raise ValueError("`features` must be finite.")
        # Tracklets with no detection to score this frame need no network call.
        if not len(boxes):
            return None
        similarity, embeddings = self._score(self._inputs(boxes, features))
        return dict(similarity=similarity, embeddings=embeddings)

    def network_inputs(self, detections, features):
        """The network's inputs for a frame, given the tracklets so far.

        Args:
            detections: `[N, 4]` (or `[N, 5]`) boxes `(left, top, width, height)`
                with only finite, non-empty boxes.
            features: `[N, D]`.

        Returns:
            A dict of tensors keyed by the model's input names (batch of 1).
        """
        boxes, _ = checked_detections(detections)
        return self._inputs(xywh_to_xyxy(boxes), np.asarray(features, np.float32))

    def frame_similarity(self, detections, features):
        """The `[M, N]` similarities of the current tracklets to a frame's
        detections (as `network_inputs`), without updating the tracker."""
        return self._score(self.network_inputs(detections, features))[0]

    def _score(self, inputs):
        """`(similarity [M, N], detection embeddings [N, D])` of one frame."""
        similarity, embeddings = self._call(*(inputs[name] for name in FRAME_INPUTS))
        return similarity.numpy()[0], embeddings.numpy()[0]

    def _inputs(self, boxes, features):
        count, history = len(self.tracks), self.history
        track_features = np.zeros((1, count, history, self.feature_dim), np.float32)
        track_boxes = np.zeros((1, count, history, 4), np.float32)
        track_mask = np.zeros((1, count, history), bool)
        for row, track in enumerate(self.tracks):
            for step, entry in enumerate(track.state):
                if entry is not None:
                    track_features[0, row, step], track_boxes[0, row, step] = entry
                    track_mask[0, row, step] = True
        return dict(detection_features=tf.constant(features[None], tf.float32),
                    detection_boxes=tf.constant(boxes[None], tf.float32),
                    track_features=tf.constant(track_features),
                    track_boxes=tf.constant(track_boxes), track_mask=tf.constant(track_mask))

    def similarities(self, boxes, detection_state):
        return detection_state["similarity"]

    def on_match(self, track, column, detection_state):
        track.state.append((detection_state["embeddings"][column], track.box))

    def on_miss(self, track):
        track.state.append(None)

    def on_birth(self, track, column, detection_state):
        track.state = collections.deque([None] * self.history, maxlen=self.history)
        track.state.append((detection_state["embeddings"][column], track.box))

