"""Baseline trackers on the same loop: IoU + Hungarian, and a SORT-style
constant-velocity Kalman filter + IoU."""

import numpy as np

from keras_relnet.tracking.assignment import box_iou
from keras_relnet.tracking.online_tracker import OnlineTracker


class IoUTracker(OnlineTracker):
    """Similarity = the IoU of a tracklet's last box and the detection.

    Args:
        match_threshold: the lowest IoU of a match.
        max_age, birth_score: see `OnlineTracker`.

    Example:
    >>> tracker = IoUTracker()
    >>> tracker.update([[0, 0, 10, 20]]).ids.tolist(), tracker.update([[1, 0, 10, 20]]).ids.tolist()
    ([1], [1])
    """

    def __init__(self, match_threshold=0.3, max_age=12, birth_score=0.5):
        super().__init__(match_threshold, max_age, birth_score)

    def similarities(self, boxes, detection_state):
        return box_iou(np.stack([track.box for track in self.tracks]), boxes)


class ConstantVelocityKalman:
    """A Kalman filter of a box `(cx, cy, w, h)` moving at constant velocity.

    The state is the box and its velocity (8 values); the measurement is the
    box. The noise scales with the box size, as in SORT-style trackers.

    Args:
        box: the first `(x1, y1, x2, y2)` box.
        position_noise: the measurement noise, a fraction of the box height.
        velocity_noise: the process noise of the velocity, ditto.
    """

    _F = np.eye(8) + np.eye(8, k=4)
    _H = np.eye(4, 8)

    def __init__(self, box, position_noise=0.05, velocity_noise=0.01):
        self.position_noise, self.velocity_noise = position_noise, velocity_noise
        measured = self._measurement(box)
        self.mean = np.concatenate([measured, np.zeros(4)])
        scale = measured[3]
        self.covariance = np.diag(np.square(
            [2 * position_noise * scale] * 4 + [10 * velocity_noise * scale] * 4))

    def predict(self):
        """Advances one frame; returns the predicted `(x1, y1, x2, y2)`."""
        scale = self.mean[3]
        noise = np.square([position * scale for position in [self.position_noise] * 4]
                          + [self.velocity_noise * scale] * 4)
        self.mean = self._F @ self.mean
        self.mean[2:4] = np.maximum(self.mean[2:4], 1e-3)
        self.covariance = self._F @ self.covariance @ self._F.T + np.diag(noise)
        return self.box()

    def correct(self, box):
        """Fuses a measured `(x1, y1, x2, y2)` box."""
        noise = np.diag(np.square([self.position_noise * self.mean[3]] * 4))
        innovation = self._measurement(box) - self._H @ self.mean
        system = self._H @ self.covariance @ self._H.T + noise
        gain = np.linalg.solve(system, self._H @ self.covariance).T
        self.mean = self.mean + gain @ innovation
        self.covariance = (np.eye(8) - gain @ self._H) @ self.covariance

    def box(self):
        """The current `(x1, y1, x2, y2)`."""
        cx, cy, w, h = self.mean[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    @staticmethod
    def _measurement(box):
        x1, y1, x2, y2 = box
        return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])


class KalmanIoUTracker(OnlineTracker):
    """Similarity = the IoU of a tracklet's Kalman prediction and the detection
    (SORT-style; the filter is `ConstantVelocityKalman`, written here).

    Args:
        match_threshold: the lowest IoU of a match.
        max_age, birth_score: see `OnlineTracker`.

    Example:
    >>> tracker = KalmanIoUTracker()
    >>> [tracker.update([[3 * t, 0, 10, 20]]).ids.tolist() for t in range(4)]
    [[1], [1], [1], [1]]
    """

    def __init__(self, match_threshold=0.3, max_age=12, birth_score=0.5):
        super().__init__(match_threshold, max_age, birth_score)

    def similarities(self, boxes, detection_state):
        predicted = np.stack([track.state.predict() for track in self.tracks])
        return box_iou(predicted, boxes)

    def on_match(self, track, column, detection_state):
        track.state.correct(track.box)

    def on_miss(self, track):
        pass  # the prediction made this frame stands

    def on_birth(self, track, column, detection_state):
        track.state = ConstantVelocityKalman(track.box)

    def prepare(self, boxes, features, image, usable, count):
        if not len(usable):  # no scoring this frame: advance the filters anyway
            for track in self.tracks:
                track.state.predict()
        return None
