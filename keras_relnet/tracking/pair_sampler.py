"""Training samples for the similarity network from sequences with identities.

One sample is one frame, as the tracker sees it online: the frame's
detections, the tracklets (ground-truth identities) observed in the T frames
before it, and the raw detections of those frames. Every (tracklet,
detection) pair of the frame is labelled: the positives (same identity),
and all the negatives, the nearby ones (the hard negatives: other objects
crossing or hiding the tracklet, and false positives next to it) included.
Augmentations: dropped past observations (missed frames), tracklets cut
short, and jittered boxes.
"""

import dataclasses

import numpy as np

from keras_relnet.tracking.mot_format import xywh_to_xyxy

SAMPLE_KEYS = ("history_features", "history_boxes", "history_mask", "track_index",
               "detection_features", "detection_boxes", "detection_mask")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Attributes:
        drop_rate: the chance to drop each past observation of a tracklet.
        shorten_rate: the chance to keep only the last 1..T-1 observations.
        box_jitter: extra box jitter (a fraction of the box size).
    """

    drop_rate: float = 0.15
    shorten_rate: float = 0.2
    box_jitter: float = 0.02


NO_AUGMENTATION = Augmentation(0.0, 0.0, 0.0)


def frame_samples(sequences, history=16, augmentation=Augmentation(), repeats=1, seed=0,
                  max_detections=None, max_tracks=None):
    """Frame samples of `sequences`, padded into arrays for `model.fit`.

    Args:
        sequences: `TrackingSequence`s (detections with true ids, features).
        history: T, the past frames per tracklet.
        augmentation: an `Augmentation` (`NO_AUGMENTATION`: none).
        repeats: each frame is sampled this many times (new augmentations).
        seed: the random seed of the augmentations.
        max_detections, max_tracks: the padded sizes K and M (None: the
            largest in the data).

    Returns:
        `(samples, labels)`: `samples` a dict of arrays (`SAMPLE_KEYS`):
        `history_features [S, T, K, D]`, `history_boxes [S, T, K, 4]` (xyxy),
        `history_mask [S, T, K]`, `track_index [S, M, T]` (the slot of the
        tracklet's detection in each past frame, -1: not observed),
        `detection_features [S, K, D]`, `detection_boxes [S, K, 4]`,
        `detection_mask [S, K]`; `labels [S, M, K]` float32: 1 same
        identity, 0 another, -1 padding.

    Example:
    >>> from keras_relnet.tracking.synthetic import generate_sequence
    >>> samples, labels = frame_samples([generate_sequence(0, frames=12, objects=3)], history=4)
    >>> samples["track_index"].shape[2], labels.shape[0]
    (4, 11)
    """
    rng = np.random.default_rng(seed)
    frames = [sample for sequence in sequences for _ in range(repeats)
              for sample in _sequence_frames(sequence, history, augmentation, rng)]
    width = sequences[0].features.shape[1]
    slots = max_detections or max([1] + [len(f["ids"]) for f in frames])
    tracks = max_tracks or max([1] + [len(f["track_ids"]) for f in frames])
    count = len(frames)
    samples = dict(
        history_features=np.zeros((count, history, slots, width), np.float32),
        history_boxes=np.zeros((count, history, slots, 4), np.float32),
        history_mask=np.zeros((count, history, slots), bool),
        track_index=np.full((count, tracks, history), -1, np.int32),
        detection_features=np.zeros((count, slots, width), np.float32),
        detection_boxes=np.zeros((count, slots, 4), np.float32),
        detection_mask=np.zeros((count, slots), bool),
    )
    labels = np.full((count, tracks, slots), -1.0, np.float32)
    for index, frame in enumerate(frames):
        for step, past in enumerate(frame["past"]):
            size = min(len(past["ids"]), slots)
            samples["history_features"][index, step, :size] = past["features"][:size]
            samples["history_boxes"][index, step, :size] = past["boxes"][:size]
            samples["history_mask"][index, step, :size] = True
        size = min(len(frame["ids"]), slots)
        samples["detection_features"][index, :size] = frame["features"][:size]
        samples["detection_boxes"][index, :size] = frame["boxes"][:size]
        samples["detection_mask"][index, :size] = True
        index_of = np.where(frame["track_index"] < slots, frame["track_index"], -1)
        kept = min(len(frame["track_ids"]), tracks)
        samples["track_index"][index, :kept] = index_of[:kept]
        same = frame["track_ids"][:kept, None] == frame["ids"][None, :size]
        labels[index, :kept, :size] = same
    return samples, labels


def _sequence_frames(sequence, history, augmentation, rng):
    """The unpadded samples of one sequence (frames with a past tracklet)."""
    detections = sequence.detections
    per_frame = {}
    for frame in range(1, sequence.frames + 1):
        rows = detections.frame(frame)
        per_frame[frame] = dict(ids=detections.ids[rows], features=sequence.features[rows],
                                boxes=xywh_to_xyxy(detections.boxes[rows]))
    empty = dict(ids=np.zeros(0, np.int64), features=np.zeros((0, sequence.features.shape[1])),
                 boxes=np.zeros((0, 4)))
    for frame in range(2, sequence.frames + 1):
        past = [_jitter(per_frame.get(frame - history + step, empty), augmentation, rng)
                for step in range(history)]
        track_ids = np.unique(np.concatenate([p["ids"] for p in past]))
        track_ids = track_ids[track_ids >= 0]
        if not track_ids.size:
            continue
        track_index = np.full((track_ids.size, history), -1)
        for step, entry in enumerate(past):
            slot = {identity: position for position, identity in enumerate(entry["ids"].tolist())}
            track_index[:, step] = [slot.get(identity, -1) for identity in track_ids.tolist()]
        track_index = _augmented_index(track_index, augmentation, rng)
        yield dict(past=past, track_ids=track_ids, track_index=track_index,
                   **_jitter(per_frame[frame], augmentation, rng))


def _jitter(entry, augmentation, rng):
    if not augmentation.box_jitter or not len(entry["ids"]):
        return entry
    boxes = entry["boxes"]
    size = boxes[:, 2:] - boxes[:, :2]
    shift = rng.normal(0, augmentation.box_jitter, boxes.shape) * np.tile(size, 2)
    return dict(entry, boxes=boxes + shift)


def _augmented_index(track_index, augmentation, rng):
    """Drops observations at random and cuts some tracklets short; every
    tracklet keeps at least its last observation."""
    track_index = track_index.copy()
    for row in track_index:
        observed = np.flatnonzero(row >= 0)
        if augmentation.shorten_rate and rng.uniform() < augmentation.shorten_rate:
            keep = rng.integers(1, max(2, observed.size))
            row[observed[:-keep]] = -1
            observed = observed[-keep:]
        if augmentation.drop_rate:
            dropped = observed[:-1][rng.uniform(size=observed.size - 1) < augmentation.drop_rate]
            row[dropped] = -1
    return track_index
