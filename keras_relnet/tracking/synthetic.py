"""Generated tracking sequences: objects that move, cross and occlude each
other, seen by a noisy detector with appearance features.

The detector model (`noisy_detections`) also turns any ground truth, such as
the TUD-Campus pedestrians that `motmetrics` ships, into detections: boxes
jittered, objects missed at random or when mostly hidden behind a closer
object, false positives, and an appearance feature per detection that is the
identity's code plus noise (more noise the more the object is hidden).
`docs/tracking.md` gives the numbers.
"""

import dataclasses
from typing import NamedTuple, Tuple

import numpy as np

from keras_relnet.ops import checks
from keras_relnet.tracking.mot_format import MotTable

# The tallest generated box, in pixels; a box starts wholly inside the image.
_TALLEST_BOX = 130.0
_SLOWEST_SPEED = 2.0


def _check_at_least(name, value, low, high=None):
    """`value` as a float, refused unless finite and in [low, high]."""
    value = checks.check_finite_number(name, value)
    if value < low or (high is not None and value > high):
        bound = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise ValueError(f"`{name}` must be {bound}; received {value:g}.")
    return value


class TrackingSequence(NamedTuple):
    """A sequence with ground truth and detections.

    `ground_truth`: `MotTable` of every object in the image (occluded too);
    `detections`: `MotTable` whose ids are the true identities (-1: a false
    positive; a tracker must not read them); `features`: `[len(detections), D]`
    appearance features; `image_size`: `(width, height)`; `frames`: the
    number of frames (numbered from 1).
    """

    ground_truth: MotTable
    detections: MotTable
    features: np.ndarray
    image_size: Tuple[int, int]
    frames: int


@dataclasses.dataclass(frozen=True)
class DetectorModel:
    """How detections are made from ground truth.

    Attributes:
        feature_dim: D, the width of the appearance features.
        miss_rate: the chance to miss a visible object.
        hidden_fraction: an object this much covered by closer ones is missed.
        box_jitter: the standard deviation of the centre (a fraction of the
            box size) and of the log size.
        false_positives: the mean number of false positives per frame.
        appearance_noise: the standard deviation, per feature, of the noise
            added to an identity's unit code (x3 for a half-hidden object).
        lookalikes: identities share one of this many prototype codes, so
            some pairs look alike.
        lookalike_spread: how far an identity's code is from its prototype.
    """

    feature_dim: int = 32
    miss_rate: float = 0.05
    hidden_fraction: float = 0.5
    box_jitter: float = 0.05
    false_positives: float = 0.5
    appearance_noise: float = 0.12
    lookalikes: int = 3
    lookalike_spread: float = 0.5

    def __post_init__(self):
        checks.check_positive_int("feature_dim", self.feature_dim)
        checks.check_positive_int("lookalikes", self.lookalikes)
        for name in ("miss_rate", "hidden_fraction"):
            _check_at_least(name, getattr(self, name), 0.0, 1.0)
        for name in ("box_jitter", "false_positives", "appearance_noise", "lookalike_spread"):
            _check_at_least(name, getattr(self, name), 0.0)


def generate_sequence(seed, frames=80, objects=10, image_size=(640, 480), max_speed=9.0,
                      detector=DetectorModel()):
    """A generated sequence: walking boxes that cross and occlude each other.

    Objects appear during the first 40% of the frames and live for half the
    sequence or more; they move mostly sideways (so paths cross) at 2 to
    `max_speed` pixels per frame with random accelerations, bounce off the
    image borders, and the one whose box reaches lower is in front.

    Args:
        seed: the random seed (the same seed, the same sequence).
        frames: the number of frames.
        objects: the number of identities.
        image_size: `(width, height)` in pixels.
        max_speed: the fastest speed in pixels per frame.
        detector: the `DetectorModel` that makes the detections.

    Returns:
        A `TrackingSequence`.

    Raises:
        ValueError: fewer than 2 frames or 1 object (counts must be whole),
            an image too small for the boxes (at least 105 x 261 pixels:
            boxes are up to 130 pixels high), or `max_speed` below 2.

    Example:
    >>> sequence = generate_sequence(0, frames=20, objects=4)
    >>> sequence.features.shape[1], sequence.frames
    (32, 20)
    """
    if checks.check_positive_int("frames", frames) < 2:
        raise ValueError(f"`frames` must be >= 2 (objects live for half the sequence or "
                         f"more); received {frames}.")
    checks.check_positive_int("objects", objects)
    width, height = (_check_at_least(f"image_size[{axis}]", size, 0.0)
                     for axis, size in enumerate(image_size))
    smallest = (int(0.8 * _TALLEST_BOX) + 1, int(2 * _TALLEST_BOX) + 1)
    if width < smallest[0] or height < smallest[1]:
        raise ValueError(f"`image_size` must be at least {smallest} (width, height) pixels: "
                         f"boxes are up to {_TALLEST_BOX:g} pixels high and start inside "
                         f"the image; received {tuple(image_size)}.")
    _check_at_least("max_speed", max_speed, _SLOWEST_SPEED)
    rng = np.random.default_rng(seed)
    rows = []
    for identity in range(1, objects + 1):
        start = int(rng.integers(0, max(1, int(0.4 * frames))))
        stop = min(frames, start + int(rng.uniform(0.5, 1.0) * frames))
        box_height = rng.uniform(60, _TALLEST_BOX)
        size = np.array([0.4 * box_height, box_height])
        center = rng.uniform([size[0], size[1]], [width - size[0], height - size[1]])
        angle = rng.uniform(-0.5, 0.5) + rng.integers(0, 2) * np.pi
        velocity = rng.uniform(_SLOWEST_SPEED, max_speed) * np.array([np.cos(angle),
                                                                      np.sin(angle)])
        for frame in range(start + 1, stop + 1):
            rows.append((frame, identity, *(center - size / 2), *size))
            velocity = velocity + rng.normal(0, 0.3, 2)
            speed = np.linalg.norm(velocity)
            velocity *= np.clip(speed, _SLOWEST_SPEED, max_speed) / max(speed, 1e-9)
            center = center + velocity
            for axis, limit in enumerate((width, height)):
                low, high = size[axis] / 2, limit - size[axis] / 2
                if not low <= center[axis] <= high:
                    velocity[axis] = -velocity[axis]
                    center[axis] = np.clip(center[axis], low, high)
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    ground_truth = MotTable.from_rows(table[:, 0], table[:, 1], table[:, 2:6])
    detections, features = noisy_detections(ground_truth, rng, image_size, detector)
    return TrackingSequence(ground_truth, detections, features, tuple(image_size), frames)


def frame_detections(sequence, frame):
    """One frame's input to a tracker: `(detections [N, 5], features [N, D])`,
    the boxes `(left, top, width, height)` with the score as the last column.

    Example:
    >>> detections, features = frame_detections(generate_sequence(0, frames=5, objects=3), 1)
    >>> detections.shape[1], features.shape[1]
    (5, 32)
    """
    rows = sequence.detections.frame(frame)
    detections = np.concatenate([sequence.detections.boxes[rows],
                                 sequence.detections.scores[rows, None]], axis=1)
    return detections, sequence.features[rows]


def hidden_fractions(boxes):
    """How much of each box the boxes in front of it cover (the largest overlap).

    A box is in front of another when its bottom edge is lower in the image.

    Args:
        boxes: `[K, 4]` `(left, top, width, height)` of one frame.

    Returns:
        `[K]` in [0, 1].

    Example:
    >>> hidden_fractions(np.array([[0.0, 0, 10, 10], [5, 2, 10, 10]])).tolist()
    [0.4, 0.0]
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    overlap_x = np.clip(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0, None)
    overlap_y = np.clip(np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0, None)
    covered = overlap_x * overlap_y / np.maximum(boxes[:, 2] * boxes[:, 3], 1e-9)[:, None]
    in_front = y2[None, :] > y2[:, None]
    return np.where(in_front, covered, 0.0).max(axis=1, initial=0.0)


def noisy_detections(ground_truth, rng, image_size, detector=DetectorModel()):
    """Detections of a ground truth by the detector model (see the module).

    Args:
        ground_truth: a `MotTable`.
        rng: a NumPy `Generator`.
        image_size: `(width, height)` (false positives fall inside it).
        detector: a `DetectorModel`.

    Returns:
        `(detections MotTable with the true ids (-1: false positive),
        features [K, D] float32)`.
    """
    identities = np.unique(ground_truth.ids)
    codes = _identity_codes(rng, identities.size, detector)
    code_of = dict(zip(identities.tolist(), codes))
    frames, ids, boxes, scores, features = [], [], [], [], []
    for frame in np.unique(ground_truth.frames):
        rows = ground_truth.frame(frame)
        hidden = hidden_fractions(ground_truth.boxes[rows])
        for row, covered in zip(rows, hidden):
            if covered >= detector.hidden_fraction or rng.uniform() < detector.miss_rate:
                continue
            frames.append(frame)
            ids.append(ground_truth.ids[row])
            boxes.append(_jittered(rng, ground_truth.boxes[row], detector.box_jitter))
            scores.append(rng.uniform(0.6, 1.0))
            noise = detector.appearance_noise * (1 + 4 * covered)
            features.append(code_of[int(ground_truth.ids[row])]
                            + rng.normal(0, noise, detector.feature_dim))
        for _ in range(rng.poisson(detector.false_positives)):
            box_height = rng.uniform(50, 130)
            frames.append(frame)
            ids.append(-1)
            boxes.append([rng.uniform(0, image_size[0] - 0.4 * box_height),
                          rng.uniform(0, image_size[1] - box_height), 0.4 * box_height,
                          box_height])
            scores.append(rng.uniform(0.3, 0.9))
            features.append(_identity_codes(rng, 1, detector)[0]
                            + rng.normal(0, detector.appearance_noise, detector.feature_dim))
    detections = MotTable.from_rows(frames, ids, boxes, scores)
    # from_rows sorts by (frame, id): the features follow the same order.
    order = np.lexsort((np.asarray(ids, dtype=np.int64), np.asarray(frames, dtype=np.int64)))
    features = np.asarray(features, dtype=np.float32).reshape(-1, detector.feature_dim)
    return detections, features[order]


def _identity_codes(rng, count, detector):
    prototypes = rng.normal(size=(detector.lookalikes, detector.feature_dim))
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    spread = rng.normal(size=(count, detector.feature_dim)) / np.sqrt(detector.feature_dim)
    codes = prototypes[rng.integers(0, detector.lookalikes, count)]
    codes = codes + detector.lookalike_spread * spread
    return codes / np.linalg.norm(codes, axis=1, keepdims=True)


def _jittered(rng, box, jitter):
    size = np.asarray(box[2:], dtype=np.float64)
    center = np.asarray(box[:2], dtype=np.float64) + size / 2 + rng.normal(0, jitter, 2) * size
    size = size * np.exp(rng.normal(0, jitter, 2))
    return [*(center - size / 2), *size]
