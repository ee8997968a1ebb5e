"""Appearance features from pixels, for `RelationTracker(appearance=...)`."""

import numpy as np
import tensorflow as tf


def thumbnail_features(image, boxes, size=(8, 4)):
    """Each box's crop, resized to a tiny thumbnail, as a unit feature vector.

    A cheap, training-free appearance: it tells a red coat from a blue one.
    A similarity network used with it needs `feature_dim = height * width *
    channels` of the thumbnail.

    Args:
        image: `[H, W, C]` frame.
        boxes: `[N, 4]` `(left, top, width, height)` in pixels.
        size: the thumbnail `(height, width)`.

    Returns:
        `[N, size[0] * size[1] * C]` float32, each row of unit length, the
        mean colour of the thumbnail removed.

    Raises:
        ValueError: an image that is not `[H, W, C]`, or a box that is not
            finite (naming its row).

    Example:
    >>> thumbnail_features(np.ones((20, 20, 3)), np.array([[0, 0, 10, 10]]), (2, 2)).shape
    (1, 12)
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3:
        raise ValueError(f"`image` must be [height, width, channels]; received shape "
                         f"{image.shape}.")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise ValueError(f"`boxes` must be finite (left, top, width, height) rows; row {row} "
                         f"is {boxes[row].tolist()}.")
    height, width = image.shape[:2]
    corners = np.stack([boxes[:, 1] / height, boxes[:, 0] / width,
                        (boxes[:, 1] + boxes[:, 3]) / height,
                        (boxes[:, 0] + boxes[:, 2]) / width], axis=1)
    crops = tf.image.crop_and_resize(image[None], corners.astype(np.float32),
                                     np.zeros(len(boxes), np.int32), size).numpy()
    crops = crops.reshape(len(boxes), -1, image.shape[2])
    crops -= crops.mean(axis=1, keepdims=True)
    flat = crops.reshape(len(boxes), -1)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
