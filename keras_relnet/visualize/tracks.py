"""Pictures of tracking: tracks drawn over a frame, and a frame's similarity matrix."""

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tracks(tracks, frame, path, image=None, image_size=None, trail=15):
    """Saves one frame with its tracks: each id's box, label and recent path.

    Args:
        tracks: a `MotTable` of tracker output (or ground truth).
        frame: the frame drawn (1-based).
        path: output file (`.png`).
        image: optional `[H, W, 3]` frame (RGB, [0, 255] or [0, 1]).
        image_size: `(width, height)` of a blank canvas when there is no image
            (default: what the boxes span).
        trail: the past frames of each id's centre path.

    Returns:
        `path`.

    Example:
    >>> from keras_relnet.tracking import MotTable
    >>> tracks = MotTable.from_rows([1, 2], [4, 4], [[0, 0, 10, 20], [5, 0, 10, 20]])
    >>> plot_tracks(tracks, 2, "/tmp/tracks.png", image_size=(64, 48))
    '/tmp/tracks.png'
    """
    from keras_relnet.tracking.mot_format import MotTable  # the tracking extra: on use

    plt = _pyplot()
    if not isinstance(tracks, MotTable):
        raise ValueError(f"`tracks` must be a MotTable; received {type(tracks).__name__}.")
    if image is None:
        if image_size is None:
            corners = tracks.boxes[:, :2] + tracks.boxes[:, 2:]
            image_size = tuple(np.ceil(corners.max(axis=0, initial=1.0)).astype(int))
        image = np.ones((int(image_size[1]), int(image_size[0]), 3))
    image = np.asarray(image, np.float32)
    image = image / 255.0 if image.max() > 1.0 else image
    figure, axis = plt.subplots(figsize=(7, 7 * image.shape[0] / image.shape[1]))
    axis.imshow(np.clip(image, 0, 1))
    colours = plt.get_cmap("tab20")
    recent = tracks.take((tracks.frames > frame - trail) & (tracks.frames <= frame))
    for identity in np.unique(recent.ids):
        rows = recent.ids == identity
        colour = colours(int(identity) % 20)
        centres = recent.boxes[rows, :2] + recent.boxes[rows, 2:] / 2
        axis.plot(centres[:, 0], centres[:, 1], color=colour, lw=1.5, alpha=0.7)
        now = rows & (recent.frames == frame)
        for left, top, width, height in recent.boxes[now]:
            axis.add_patch(plt.Rectangle((left, top), width, height, fill=False, color=colour,
                                         lw=2))
            axis.text(left, top, str(identity), color="white", fontsize=8,
                      backgroundcolor=colour)
    axis.set_title(f"frame {frame}: {int((tracks.frames == frame).sum())} tracks")
    axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_similarity(similarity, path, track_ids=None, matches=None):
    """Saves a frame's (tracklet, detection) similarity matrix as a heat map.

    Args:
        similarity: `[M, N]` in [0, 1].
        path: output file (`.png`).
        track_ids: optional `[M]` labels of the rows.
        matches: optional `(rows, columns)` of the assignment, outlined.

    Returns:
        `path`.

    Example:
    >>> plot_similarity(np.eye(3), "/tmp/similarity.png", matches=([0, 1], [0, 1]))
    '/tmp/similarity.png'
    """
    plt = _pyplot()
    similarity = np.asarray(similarity, np.float64)
    if similarity.ndim != 2:
        raise ValueError(f"`similarity` must be [tracklets, detections]; received shape "
                         f"{similarity.shape}.")
    figure, axis = plt.subplots(figsize=(1 + 0.45 * max(similarity.shape[1], 4),
                                         1 + 0.45 * max(similarity.shape[0], 4)))
    shown = axis.imshow(similarity, vmin=0, vmax=1, cmap="viridis")
    figure.colorbar(shown, ax=axis, fraction=0.046)
    axis.set_xlabel("detection")
    axis.set_ylabel("tracklet")
    axis.set_xticks(range(similarity.shape[1]))
    axis.set_yticks(range(similarity.shape[0]))
    if track_ids is not None:
        axis.set_yticklabels([str(identity) for identity in track_ids])
    if matches is not None:
        for row, column in zip(*matches):
            axis.add_patch(plt.Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False,
                                         color="red", lw=2))
    axis.set_title("similarity (red: assigned)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
