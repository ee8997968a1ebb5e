"""Box geometry of the object relation module: relative geometry and its
sinusoidal embedding (Hu et al., "Relation Networks for Object Detection",
CVPR 2018). The math: `docs/object_relation.md`.

Everything here runs in float32 (float64 stays float64) whatever the input
dtype: log-ratios of box sizes lose too much in float16. Boxes come from
proposals or data, so no gradient flows into them.
"""

import tensorflow as tf

from keras_relnet.ops import checks
from keras_relnet.ops.precision import at_least_float32

BOX_FORMATS = ("yxyx", "xyxy")
_MIN_SIZE = 1e-6
_MIN_RELATIVE_DISTANCE = 1e-3


def checked_boxes(name, boxes_shape):
    """Checks that a boxes shape ends with 4 coordinates.

    Args:
        name: argument name used in the error message.
        boxes_shape: the received shape.

    Returns:
        The shape as a `tf.TensorShape`.

    Example:
    >>> checked_boxes("boxes", (2, 5, 4)).as_list()
    [2, 5, 4]
    """
    shape = tf.TensorShape(boxes_shape)
    if shape.rank is None or shape.rank < 1 or shape[-1] != 4:
        raise ValueError(
            f"`{name}` must have shape [..., 4] (one box per row); received shape "
            f"{shape.as_list() if shape.rank is not None else shape}."
        )
    return shape


def centers_and_sizes(boxes, box_format="yxyx", size_offset=0.0):
    """Box centres and sizes, sizes clamped to a small positive epsilon.

    Args:
        boxes: `[..., 4]`, `(y1, x1, y2, x2)` for "yxyx" or `(x1, y1, x2, y2)`
            for "xyxy".
        box_format: "yxyx" (TF / Model Garden) or "xyxy".
        size_offset: added to `x2 - x1` and `y2 - y1` (1 reproduces the
            original pixel convention, 0 is for continuous coordinates).

    Returns:
        `(center_x, center_y, width, height)`, each `[...]` in float32.

    Example:
    >>> cx, cy, w, h = centers_and_sizes(tf.constant([[0.0, 0.0, 2.0, 4.0]]))
    >>> [float(v[0]) for v in (cx, cy, w, h)]
    [2.0, 1.0, 4.0, 2.0]
    """
    checks.check_choice("box_format", box_format, BOX_FORMATS)
    checked_boxes("boxes", boxes.shape)
    boxes = tf.stop_gradient(at_least_float32(tf.convert_to_tensor(boxes)))
    first, second, third, fourth = tf.unstack(boxes, axis=-1)
    if box_format == "yxyx":
        y1, x1, y2, x2 = first, second, third, fourth
    else:
        x1, y1, x2, y2 = first, second, third, fourth
    width = tf.maximum(x2 - x1 + size_offset, _MIN_SIZE)
    height = tf.maximum(y2 - y1 + size_offset, _MIN_SIZE)
    return (x1 + x2) / 2, (y1 + y2) / 2, width, height


def relative_geometry(query_boxes, key_boxes=None, box_format="yxyx", size_offset=0.0):
    """Relative geometry `(dx, dy, dw, dh)` of every (query, key) box pair.

    `dx = log(max(|cx_q - cx_k| / w_q, 1e-3))`, `dw = log(w_q / w_k)` (and the
    same for y and h): normalised by the query box, translation and scale
    invariant.

    Args:
        query_boxes: `[B, Nq, 4]`.
        key_boxes: `[B, Nk, 4]`; None means the query boxes.
        box_format: "yxyx" or "xyxy".
        size_offset: see `centers_and_sizes`.

    Returns:
        `[B, Nq, Nk, 4]` float32, finite for degenerate and identical boxes.

    Example:
    >>> boxes = tf.constant([[[0.0, 0.0, 1.0, 1.0], [0.0, 2.0, 1.0, 4.0]]])
    >>> relative_geometry(boxes)[0, 0, 1].numpy().round(4)  # 2.5 widths right, 2x wide
    array([ 0.9163, -6.9078, -0.6931,  0.    ], dtype=float32)
    """
    key_boxes = query_boxes if key_boxes is None else key_boxes
    qx, qy, qw, qh = centers_and_sizes(query_boxes, box_format, size_offset)
    kx, ky, kw, kh = centers_and_sizes(key_boxes, box_format, size_offset)
    # expand_dims, not t[:, None]: TFLite has no builtin for new-axis slicing.
    column = lambda t: tf.expand_dims(t, 2)
    row = lambda t: tf.expand_dims(t, 1)
    floor = _MIN_RELATIVE_DISTANCE
    dx = tf.math.log(tf.maximum(tf.abs(column(qx) - row(kx)) / column(qw), floor))
    dy = tf.math.log(tf.maximum(tf.abs(column(qy) - row(ky)) / column(qh), floor))
    dw = tf.math.log(column(qw) / row(kw))
    dh = tf.math.log(column(qh) / row(kh))
    return tf.stack([dx, dy, dw, dh], axis=-1)


def sinusoid(values, size, scale=1.0, wave_length=1000.0):
    """Sinusoidal embedding of scalars: sines, then cosines, of `size / 2` frequencies.

    `arg_k = scale * value / wave_length^(2k / size)`, `k = 0 .. size/2 - 1`;
    the result is `[sin(arg_0..), cos(arg_0..)]`.

    Args:
        values: `[...]` scalars.
        size: embedding size (even).
        scale: multiplies the values first (100 for box geometry).
        wave_length: the longest wave length.

    Returns:
        `[..., size]` in at least float32.

    Example:
    >>> sinusoid(tf.constant([0.0]), 4).numpy()
    array([[0., 0., 1., 1.]], dtype=float32)
    """
    if size % 2:
        raise ValueError(f"`size` must be even (sines and cosines); received {size}.")
    values = at_least_float32(tf.convert_to_tensor(values))
    exponents = tf.range(size // 2, dtype=values.dtype) * (2.0 / size)
    arguments = scale * tf.expand_dims(values, -1) / tf.pow(tf.cast(wave_length, values.dtype), exponents)
    return tf.concat([tf.sin(arguments), tf.cos(arguments)], axis=-1)


def geometry_embedding(geometry, size=64):
    """The sinusoidal embedding of relative geometry, `size / 4` values per coordinate.

    Coordinate c (dx, dy, dw, dh) fills `[c * size/4, (c + 1) * size/4)` with
    `sinusoid(geometry_c, size / 4, scale=100)`: index `c*16 + s*8 + k` at 64.

    Args:
        geometry: `[..., 4]` from `relative_geometry`.
        size: embedding size, a multiple of 8.

    Returns:
        `[..., size]` float32.

    Example:
    >>> geometry_embedding(tf.zeros([1, 2, 2, 4])).shape
    TensorShape([1, 2, 2, 64])
    """
    if size % 8:
        raise ValueError(f"`geometry_dim` must be a multiple of 8; received {size}.")
    per_coordinate = [sinusoid(coordinate, size // 4, scale=100.0)
                      for coordinate in tf.unstack(geometry, axis=-1)]
    return tf.concat(per_coordinate, axis=-1)
