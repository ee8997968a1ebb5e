"""The online tracking loop every tracker here shares: score, assign, update,
birth and death; the trackers differ only in how they score a pair."""

from typing import NamedTuple

import numpy as np

from keras_relnet.ops import checks
from keras_relnet.tracking.assignment import assign
from keras_relnet.tracking.mot_format import xywh_to_xyxy


class TrackedObjects(NamedTuple):
    """The tracks reported for one frame, one row each (sorted by id).

    `ids [K]` int (from 1), `boxes [K, 4]` `(left, top, width, height)` (the
    matched detection's box), `scores [K]`, `detection_indices [K]` (the row
    of each in the frame's detections).
    """

    ids: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    detection_indices: np.ndarray


class Track:
    """One tracklet: its id, its last box (xyxy), its hits and missed frames,
    and what the tracker keeps for scoring (`state`)."""

    def __init__(self, identity, box, state=None):
        self.identity = identity
        self.box = box
        self.hits = 1
        self.misses = 0
        self.state = state


class OnlineTracker:
    """Tracking by detection, one frame at a time.

    Per frame: score every (tracklet, detection) pair (`similarities`),
    assign with the Hungarian algorithm, keep a match only at or above
    `match_threshold`; an unmatched detection with a score at or above
    `birth_score` starts a tracklet; a tracklet unmatched for more than
    `max_age` frames in a row ends. A detection whose box is not finite or
    is empty is ignored (never matched, never a tracklet). Deterministic.

    Args:
        match_threshold: the lowest similarity a match may have.
        max_age: the missed frames a tracklet survives.
        birth_score: the lowest detection score that starts a tracklet.
    """

    def __init__(self, match_threshold, max_age=12, birth_score=0.5):
        self.match_threshold = checks.check_finite_number("match_threshold", match_threshold)
        self.max_age = checks.check_positive_int("max_age", max_age)
        self.birth_score = checks.check_finite_number("birth_score", birth_score)
        self.reset()

    def reset(self):
        """Forgets every tracklet; ids start from 1 again."""
        self.tracks = []
        self.next_id = 1
        self.frame_count = 0

    def update(self, detections, features=None, image=None):
        """Tracks one frame.

        Args:
            detections: `[N, 4]` boxes `(left, top, width, height)` or
                `[N, 5]` with a score column (default score 1).
            features: optional `[N, D]` appearance features.
            image: optional `[H, W, C]` frame, for trackers that compute
                features from pixels.

        Returns:
            The `TrackedObjects` of the frame.
        """
        boxes, scores = checked_detections(detections)
        usable = np.flatnonzero(np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0)
                                & (boxes[:, 3] > 0) & np.isfinite(scores))
        corners = xywh_to_xyxy(boxes[usable])
        detection_state = self.prepare(corners, features, image, usable, len(boxes))
        if self.tracks and len(usable):
            similarity = np.asarray(self.similarities(corners, detection_state), np.float64)
            rows, columns = assign(similarity, self.match_threshold)
        else:
            rows = columns = np.zeros(0, np.int64)
        reported = []
        matched = dict(zip(rows.tolist(), columns.tolist()))
        for row, track in enumerate(self.tracks):
            if row in matched:
                column = matched[row]
                track.box, track.hits, track.misses = corners[column], track.hits + 1, 0
                self.on_match(track, column, detection_state)
                reported.append((track.identity, usable[column]))
            else:
                track.misses += 1
                self.on_miss(track)
        self.tracks = [track for track in self.tracks if track.misses <= self.max_age]
        taken = set(columns.tolist())
        for column, index in enumerate(usable):
            if column not in taken and scores[index] >= self.birth_score:
                track = Track(self.next_id, corners[column])
                self.next_id += 1
                self.on_birth(track, column, detection_state)
                self.tracks.append(track)
                reported.append((track.identity, index))
        self.frame_count += 1
        reported.sort()
        ids = np.array([identity for identity, _ in reported], np.int64)
        indices = np.array([index for _, index in reported], np.int64)
        return TrackedObjects(ids, boxes[indices].reshape(-1, 4), scores[indices], indices)

    def prepare(self, boxes, features, image, usable, count):
        """What the scoring needs of this frame's usable detections (`boxes` xyxy)."""
        return None

    def similarities(self, boxes, detection_state):
        """`[M, N]` similarity of each tracklet to each usable detection."""
        raise NotImplementedError

    def on_match(self, track, column, detection_state):
        """Updates a tracklet's state with its matched detection."""

    def on_miss(self, track):
        """Updates a tracklet's state for a frame without a match."""

    def on_birth(self, track, column, detection_state):
        """Sets a new tracklet's state from its first detection."""


def checked_detections(detections):
    """`(boxes [N, 4], scores [N])` of a frame's detections, checked.

    Example:
    >>> boxes, scores = checked_detections([[0, 0, 10, 20, 0.9]])
    >>> boxes.tolist(), scores.tolist()
    ([[0.0, 0.0, 10.0, 20.0]], [0.9])
    """
    detections = np.asarray(detections, dtype=np.float64)
    if detections.size == 0:
        detections = detections.reshape(0, 4)
    if detections.ndim != 2 or detections.shape[1] not in (4, 5):
        raise ValueError("`detections` must be [N, 4] boxes (left, top, width, height) or "
                         f"[N, 5] with a score; received shape {detections.shape}.")
    scores = detections[:, 4] if detections.shape[1] == 5 else np.ones(len(detections))
    return detections[:, :4], scores


def tracks_to_table(frames_of_tracks):
    """`(frame, TrackedObjects)` pairs to the rows of a `MotTable`.

    Returns:
        `(frames, ids, boxes, scores)` arrays.
    """
    frames, ids, boxes, scores = [], [], [], []
    for frame, tracked in frames_of_tracks:
        frames += [frame] * len(tracked.ids)
        ids += tracked.ids.tolist()
        boxes += tracked.boxes.tolist()
        scores += tracked.scores.tolist()
    return frames, ids, np.asarray(boxes).reshape(-1, 4), scores
