"""The per-frame assignment of detections to tracklets."""

import numpy as np
from scipy.optimize import linear_sum_assignment


def assign(similarity, threshold):
    """The matching that maximises the total similarity, above a threshold.

    The Hungarian algorithm (`scipy.optimize.linear_sum_assignment` on
    `-similarity`) picks at most one detection per tracklet and one tracklet
    per detection; a pair below `threshold` is then left unmatched. A
    non-finite similarity counts as 0.

    Args:
        similarity: `[M, N]` tracklet-detection similarities.
        threshold: the lowest similarity a match may have.

    Returns:
        `(tracklet rows [K], detection columns [K])`, int arrays sorted by row.

    Example:
    >>> rows, columns = assign(np.array([[0.9, 0.8], [0.85, 0.1]]), 0.5)
    >>> rows.tolist(), columns.tolist()
    ([0, 1], [1, 0])
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    if similarity.ndim != 2:
        raise ValueError(f"`similarity` must be a [tracklets, detections] matrix; received "
                         f"shape {similarity.shape}.")
    similarity = np.where(np.isfinite(similarity), similarity, 0.0)
    if not similarity.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, columns = linear_sum_assignment(-similarity)
    keep = similarity[rows, columns] >= threshold
    return rows[keep].astype(np.int64), columns[keep].astype(np.int64)


def box_iou(first, second):
    """The IoU of every pair of `(x1, y1, x2, y2)` boxes.

    The NumPy twin of the op `ops.duplicate_removal.pairwise_iou` (a test
    holds them equal): the trackers call it per frame, where a TensorFlow
    call would cost 14x the IoU tracker's whole update.

    Args:
        first: `[M, 4]`.
        second: `[N, 4]`.

    Returns:
        `[M, N]` in [0, 1] (0 for an empty box or one with a NaN).

    Example:
    >>> box_iou(np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 0, 3, 2]])).round(3).tolist()
    [[0.333]]
    """
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    width = np.minimum(first[:, None, 2], second[:, 2]) - np.maximum(first[:, None, 0],
                                                                     second[:, 0])
    height = np.minimum(first[:, None, 3], second[:, 3]) - np.maximum(first[:, None, 1],
                                                                      second[:, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area(first)[:, None] + area(second) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersection / union
    return np.where(np.isfinite(iou) & (union > 0), iou, 0.0)
