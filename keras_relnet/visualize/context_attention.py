"""Attention maps of global-context and non-local blocks for an image.

GCNet's figure "attention maps for different query pixels" shows that a
non-local block's maps hardly depend on the query pixel, which motivates the
query-independent GC block. `context_attention` returns those maps for any
`GlobalContext`/`SimplifiedNonLocal2D` (one map per image) or `NonLocal2D`
(one map per query pixel) inside a model, and `plot_attention` saves them
over the image with matplotlib.
"""

import keras
import numpy as np

from keras_relnet.layers.global_context import GlobalContext
from keras_relnet.layers.non_local import NonLocal2D

_ATTENTION_LAYERS = (GlobalContext, NonLocal2D)


def context_attention(model, image, layer_name=None, query_points=((0.5, 0.5),)):
    """Attention maps of one context block of `model` for one image.

    Args:
        model: a functional `keras.Model` containing the block.
        image: `[H, W, C]` array, preprocessed as the model expects.
        layer_name: the block's name (None: the last GC/SNL/NL block).
        query_points: for a `NonLocal2D` block, query pixels as `(row, col)`
            fractions of the feature map; ignored by GC/SNL blocks, whose map
            is the same for every query.

    Returns:
        `[num_maps, h, w]` float32 maps on the block's feature grid, each
        summing to 1 (one map for GC/SNL, one per query point for NL).

    Example:
    >>> from keras_relnet.applications import ResNet26
    >>> model = ResNet26(context_block="gc", input_shape=(64, 64, 3), classes=2)
    >>> context_attention(model, np.zeros((64, 64, 3), "float32")).shape
    (1, 2, 2)
    """
    layer = _attention_layer(model, layer_name)
    image = np.asarray(image, "float32")
    if image.ndim != 3:
        raise ValueError(
            f"`image` must be one [height, width, channels] image; received shape "
            f"{image.shape}."
        )
    features = keras.Model(model.input, layer.input)(image[None])
    _, scores = layer(features, return_attention_scores=True)
    height, width = features.shape[1:3]
    if scores is None:
        raise ValueError(
            f"Layer '{layer.name}' uses average pooling: it has no attention map."
        )
    scores = np.asarray(scores, "float32")
    if isinstance(layer, NonLocal2D):
        if layer.sub_sample:  # 2x2 pooling; a size-1 axis is kept
            height, width = max(height // 2, 1), max(width // 2, 1)
        rows = []
        for row, col in query_points:
            pixel = int(min(row, 0.999) * features.shape[1]) * features.shape[2] + int(
                min(col, 0.999) * features.shape[2])
            rows.append(scores[0, pixel])
        return np.stack(rows).reshape(-1, height, width)
    return scores.reshape(1, height, width)


def plot_attention(image, maps, path, titles=None, query_points=None):
    """Saves the image and its attention maps, side by side, as a PNG.

    Each map is drawn relative to the uniform weight `1 / (h * w)`: 1 means
    "as much as any pixel", and the colour scale runs from 0 to at least 2
    (more when a map is more peaked), with a colour bar. So an untrained
    block's nearly uniform map looks flat, not sharply peaked.

    Args:
        image: `[H, W, 3]` RGB array in [0, 255] or [0, 1].
        maps: `[num_maps, h, w]` from `context_attention` (at least one map).
        path: output file (`.png`).
        titles: optional title per map.
        query_points: optional `(row, col)` fractions, one per map, marked
            with a cross (non-local query pixels).

    Returns:
        `path`.

    Example:
    >>> maps = np.full((1, 2, 2), 0.25)
    >>> plot_attention(np.zeros((8, 8, 3)), maps, "/tmp/attention.png")
    '/tmp/attention.png'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image, maps = _checked_figure_inputs(image, maps, titles, query_points)
    image = image / 255.0 if image.max() > 1.0 else image
    relative = maps * maps.shape[1] * maps.shape[2]
    top = max(2.0, float(relative.max()))
    figure, axes = plt.subplots(1, len(maps) + 1, figsize=(3 * (len(maps) + 1) + 1, 3),
                                squeeze=False)
    axes = axes[0]
    axes[0].imshow(np.clip(image, 0, 1))
    axes[0].set_title("image")
    extent = (0, image.shape[1], image.shape[0], 0)
    for index, (axis, attention) in enumerate(zip(axes[1:], relative)):
        axis.imshow(np.clip(image, 0, 1))
        shown = axis.imshow(attention, cmap="jet", alpha=0.55, extent=extent,
                            interpolation="bilinear", vmin=0.0, vmax=top)
        if query_points is not None:
            row, col = query_points[index]
            axis.plot(col * image.shape[1], row * image.shape[0], "w+", markersize=14, mew=3)
        axis.set_title(titles[index] if titles else f"map {index + 1}")
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    figure.colorbar(shown, ax=list(axes[1:]), fraction=0.05,
                    label="attention x h*w (1 = uniform)")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _checked_figure_inputs(image, maps, titles, query_points):
    """`(image, maps)` as float arrays, after checking what `plot_attention` needs."""
    image, maps = np.asarray(image, "float32"), np.asarray(maps, "float32")
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"`image` must be one non-empty [height, width, 3] RGB image; "
                         f"received shape {image.shape}.")
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"`maps` must be [num_maps, height, width] with at least one "
                         f"non-empty map; received shape {maps.shape}.")
    if not np.isfinite(maps).all():
        raise ValueError("`maps` must be finite; received NaN or infinite weights.")
    for name, values in (("titles", titles), ("query_points", query_points)):
        if values is not None and len(values) != len(maps):
            raise ValueError(f"`{name}` must have one entry per map ({len(maps)}); received "
                             f"{len(values)}.")
    return image, maps


def _attention_layer(model, layer_name):
    if layer_name is not None:
        layer = model.get_layer(layer_name)
        if not isinstance(layer, _ATTENTION_LAYERS):
            raise ValueError(
                f"`layer_name` must name a GlobalContext, SimplifiedNonLocal2D or "
                f"NonLocal2D layer; received '{layer_name}' ({type(layer).__name__})."
            )
        return layer
    candidates = [layer for layer in model.layers if isinstance(layer, _ATTENTION_LAYERS)]
    if not candidates:
        raise ValueError(
            f"`model` '{model.name}' has no GlobalContext, SimplifiedNonLocal2D or "
            "NonLocal2D layer to visualise."
        )
    return candidates[-1]
