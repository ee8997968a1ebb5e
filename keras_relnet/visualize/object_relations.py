"""The object pairs an object relation module links most strongly.

Relation Networks for Object Detection shows, for a detected object, the
objects with the highest relation weights. `strongest_relations` ranks the
(query, key) pairs of an `ObjectRelation` attention map and `plot_relations`
draws the boxes and those pairs over the image.
"""

import numpy as np

from keras_relnet.ops import checks
from keras_relnet.ops.box_geometry import BOX_FORMATS


def strongest_relations(attention, top=10, exclude_self=True):
    """The `top` (query, key) pairs by relation weight, averaged over heads.

    Args:
        attention: `[heads, N, N]` or `[N, N]` weights of one image (as
            `ObjectRelation(..., return_attention_scores=True)` returns them).
        top: how many pairs to return.
        exclude_self: skip an object's weight on itself.

    Returns:
        A list of `(query, key, weight)`, strongest first.

    Example:
    >>> strongest_relations(np.array([[0.5, 0.5], [0.9, 0.1]]), top=1)
    [(1, 0, 0.9)]
    """
    weights = np.asarray(attention, np.float64)
    if weights.ndim == 3:
        weights = weights.mean(axis=0)
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError("`attention` must have shape [heads, N, N] or [N, N]; received "
                         f"shape {np.shape(attention)}.")
    if not np.isfinite(weights).all():
        raise ValueError("`attention` must be finite; received NaN or infinite weights.")
    if exclude_self:
        weights = np.where(np.eye(len(weights), dtype=bool), -np.inf, weights)
    order = np.argsort(-weights, axis=None, kind="stable")[:top]
    pairs = [(int(i), int(j), round(float(weights[i, j]), 6))
             for i, j in zip(*np.unravel_index(order, weights.shape))]
    return [pair for pair in pairs if np.isfinite(pair[2])]


def plot_relations(image, boxes, attention, path, top=10, box_format="yxyx", labels=None):
    """Saves the image with its boxes and the `top` strongest relations as a PNG.

    A relation is an arrow from the query box centre to the key box centre,
    as thick and opaque as its weight is large relative to the strongest;
    pairs of weight 0 are not drawn.

    Args:
        image: `[H, W, 3]` RGB in [0, 255] or [0, 1].
        boxes: `[N, 4]` in image pixels.
        attention: `[heads, N, N]` or `[N, N]`.
        path: output file (`.png`).
        top: number of relations drawn.
        box_format: "yxyx" or "xyxy".
        labels: optional text per box.

    Returns:
        `path`.

    Example:
    >>> boxes = np.array([[0, 0, 4, 4], [4, 4, 8, 8]])
    >>> plot_relations(np.zeros((8, 8, 3)), boxes, np.eye(2)[::-1], "/tmp/relations.png")
    '/tmp/relations.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    checks.check_choice("box_format", box_format, BOX_FORMATS)
    boxes = np.asarray(boxes, np.float64)
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"`boxes` must have shape [N, 4]; received shape {boxes.shape}.")
    if np.shape(attention)[-2:] != (len(boxes), len(boxes)):
        raise ValueError(f"`attention` must relate the {len(boxes)} boxes ([heads, "
                         f"{len(boxes)}, {len(boxes)}] or [{len(boxes)}, {len(boxes)}]); "
                         f"received shape {np.shape(attention)}.")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"`labels` must have one entry per box ({len(boxes)}); received "
                         f"{len(labels)}.")
    y1, x1, y2, x2 = (boxes.T if box_format == "yxyx" else boxes[:, [1, 0, 3, 2]].T)
    image = np.asarray(image, "float32")
    image = image / 255.0 if image.max() > 1.0 else image
    figure, axis = plt.subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
    axis.imshow(np.clip(image, 0, 1))
    for index in range(len(boxes)):
        axis.add_patch(plt.Rectangle((x1[index], y1[index]), x2[index] - x1[index],
                                     y2[index] - y1[index], fill=False, color="yellow", lw=1.5))
        if labels is not None:
            axis.text(x1[index], y1[index], str(labels[index]), color="black", fontsize=8,
                      backgroundcolor="yellow")
    # Zero weights are no relations (an all-zero map draws none).
    relations = [pair for pair in strongest_relations(attention, top) if pair[2] > 0]
    strongest = relations[0][2] if relations else 1.0
    centre = lambda i: ((x1[i] + x2[i]) / 2, (y1[i] + y2[i]) / 2)
    for query, key, weight in relations:
        strength = weight / strongest
        axis.annotate("", xy=centre(key), xytext=centre(query),
                      arrowprops=dict(arrowstyle="->", color="red", lw=0.5 + 3 * strength,
                                      alpha=0.3 + 0.7 * strength))
    axis.set_title(f"{len(relations)} strongest relations (query -> key)")
    axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
