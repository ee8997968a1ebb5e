"""Learnable region features: object-pixel relation as a replacement of RoIAlign
(Gu et al., "Learning Region Features for Object Detection", ECCV 2018).
The math: `docs/object_relation.md` (learnable region features).

Part k of box b is a weighted sum over the pixels p of its support (the box
enlarged by a context factor):

    y_k(b) = sum_p w_k(b, p) x(p),   w_k = softmax_p(G_k(b, p) + A_k(x, p))
    G_k    = <W_k^box E(box corners), W^im E(pixel position)>
    A_k    = 1x1 convolution of x with K outputs

Coordinates are input-image pixels; feature pixel (i, j) sits at
`((i + 0.5) s, (j + 0.5) s)` for feature stride s (the "aligned" RoIAlign
convention), and part (u, v) of a `h x w` grid at the centre of its bin.
RoIAlign with one sample per bin is the special case `w_k = bilinear weights
of the part centre` (`bilinear_weights`). The weights are `[B, N, K, H*W]`:
cost and memory grow with the feature-map area.

A box with a non-finite coordinate, like a box outside the image, has an
empty support: all-zero weights, so all-zero region features (what TF's
`crop_and_resize` gives such a box). Other boxes are unaffected.
"""

import tensorflow as tf

from keras_relnet.ops import object_inputs
from keras_relnet.ops.box_geometry import sinusoid
from keras_relnet.ops.precision import at_least_float32, compute_dtype

_MASKED_LOGIT = -1e9


def yxyx_boxes(boxes, box_format):
    """Boxes as `(y1, x1, y2, x2)` in at least float32, without gradient.

    Example:
    >>> yxyx_boxes(tf.constant([[1.0, 2.0, 3.0, 4.0]]), "xyxy").numpy()
    array([[2., 1., 4., 3.]], dtype=float32)
    """
    boxes = tf.stop_gradient(at_least_float32(tf.convert_to_tensor(boxes)))
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1) if box_format == "xyxy" else boxes


def part_centers(boxes, output_size):
    """Centres of the `h x w` bins of every box, `[B, N, h*w, 2]` as (y, x).

    Args:
        boxes: `[B, N, 4]` yxyx.
        output_size: `(h, w)`.

    Returns:
        `[B, N, h*w, 2]`, row-major over the bins.

    Example:
    >>> part_centers(tf.constant([[[0.0, 0.0, 2.0, 4.0]]]), (1, 2)).numpy()[0, 0]
    array([[1., 1.],
           [1., 3.]], dtype=float32)
    """
    height, width = output_size
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    fraction = lambda n: (tf.range(n, dtype=boxes.dtype) + 0.5) / n
    ys = tf.expand_dims(y1, -1) + tf.expand_dims(y2 - y1, -1) * fraction(height)  # [B, N, h]
    xs = tf.expand_dims(x1, -1) + tf.expand_dims(x2 - x1, -1) * fraction(width)
    grid_y = tf.broadcast_to(tf.expand_dims(ys, -1), tf.concat([tf.shape(ys), [width]], 0))
    grid_x = tf.broadcast_to(tf.expand_dims(xs, -2), tf.concat([tf.shape(ys), [width]], 0))
    points = tf.stack([grid_y, grid_x], axis=-1)
    return tf.reshape(points, tf.concat([tf.shape(boxes)[:-1], [height * width, 2]], 0))


def pixel_centers(feature_size, stride, dtype=tf.float32):
    """Image positions `(y, x)` of the feature pixels, `[H*W, 2]`, row-major.

    Example:
    >>> pixel_centers((1, 2), 4).numpy()
    array([[2., 2.],
           [2., 6.]], dtype=float32)
    """
    height, width = feature_size
    ys = (tf.cast(tf.range(height), dtype) + 0.5) * stride
    xs = (tf.cast(tf.range(width), dtype) + 0.5) * stride
    grid_y, grid_x = tf.meshgrid(ys, xs, indexing="ij")
    return tf.reshape(tf.stack([grid_y, grid_x], axis=-1), [-1, 2])


def bilinear_weights(points, feature_size, stride):
    """Bilinear-interpolation weights of image points over the feature pixels.

    Args:
        points: `[..., 2]` (y, x) image positions.
        feature_size: `(H, W)`.
        stride: feature stride in image pixels.

    Returns:
        `[..., H*W]`; sums to 1 for points between pixel centres.

    Example:
    >>> bilinear_weights(tf.constant([[2.0, 4.0]]), (1, 2), 4).numpy()
    array([[0.5, 0.5]], dtype=float32)
    """
    pixels = pixel_centers(feature_size, stride, points.dtype) / stride
    offsets = tf.expand_dims(points, -2) / stride - pixels  # [..., H*W, 2] in feature pixels
    return tf.reduce_prod(tf.nn.relu(1.0 - tf.abs(offsets)), axis=-1)


def support_mask(boxes, feature_size, stride, context):
    """Which feature pixels lie in each box enlarged by `context`, `[B, N, H*W]`.

    The support is at least one stride wide, so every box inside the image
    has a pixel.

    Example:
    >>> support_mask(tf.constant([[[0.0, 0.0, 4.0, 4.0]]]), (1, 3), 4, 1.0).numpy()
    array([[[ True, False, False]]])
    """
    y1, x1, y2, x2 = tf.unstack(boxes, axis=-1)
    center = tf.expand_dims(tf.stack([(y1 + y2) / 2, (x1 + x2) / 2], axis=-1), -2)
    half = tf.maximum(context * tf.stack([y2 - y1, x2 - x1], axis=-1) / 2, stride / 2)
    pixels = pixel_centers(feature_size, stride, boxes.dtype)
    return tf.reduce_all(tf.abs(pixels - center) <= tf.expand_dims(half, -2), axis=-1)


def aggregate_regions(feature_map, weights, output_size):
    """`y_k(b) = sum_p w_k(b, p) x(p)`: part features from per-pixel weights.

    Args:
        feature_map: `[B, H, W, C]`.
        weights: `[B, N, h*w, H*W]`.
        output_size: `(h, w)`.

    Returns:
        `[B, N, h, w, C]` in the feature dtype.

    Example:
    >>> x = tf.reshape(tf.range(2.0), [1, 1, 2, 1])
    >>> aggregate_regions(x, tf.constant([[[[0.25, 0.75]]]]), (1, 1)).numpy().ravel()
    array([0.75], dtype=float32)
    """
    shape = tf.shape(feature_map)
    pixels = tf.reshape(feature_map, [shape[0], -1, feature_map.shape[-1]])
    parts = tf.einsum("bnkp,bpc->bnkc", tf.cast(weights, pixels.dtype), pixels)
    return tf.reshape(parts, tf.concat([tf.shape(weights)[:2], output_size,
                                        [feature_map.shape[-1]]], 0))


def learned_region_weights(feature_map, boxes, appearance_kernel, box_projection,
                           image_projection, output_size, stride=1.0, context=2.0,
                           embedding_dim=32):
    """The learned part weights `softmax_p(G_k + A_k)` over each box's support.

    Args:
        feature_map: `[B, H, W, C]`.
        boxes: `[B, N, 4]` yxyx, image pixels.
        appearance_kernel: `[C, K]`, the 1x1 convolution of A.
        box_projection: `[K, 4 * embedding_dim, P]`, W_k^box.
        image_projection: `[2 * embedding_dim, P]`, W^im.
        output_size: `(h, w)`, `K = h * w`.
        stride: feature stride in image pixels.
        context: support = the box enlarged by this factor.
        embedding_dim: sinusoid size per coordinate (wave length 1000).

    Returns:
        `[B, N, K, H*W]` weights in at least float32; zero for a box whose
        support is empty (entirely outside the image, or not finite).

    Raises:
        ValueError: when `feature_map` and `boxes` disagree on the batch, or
            the channels differ from `appearance_kernel`'s.

    Example:
    >>> w = learned_region_weights(tf.ones([1, 4, 4, 2]), tf.constant([[[0.0, 0, 2, 2]]]),
    ...     tf.zeros([2, 4]), tf.zeros([4, 8, 3]), tf.zeros([4, 3]), (2, 2), embedding_dim=2)
    >>> w.shape, float(tf.reduce_sum(w[0, 0, 0]))
    (TensorShape([1, 1, 4, 16]), 1.0)
    """
    object_inputs.check_rank("feature_map", feature_map, 4, "[batch, height, width, channels]")
    object_inputs.check_boxes("boxes", boxes)
    feature_map, boxes = object_inputs.check_same_dims("feature_map", feature_map, "boxes",
                                                       boxes, ((0, 0, "batch"),))
    object_inputs.check_width("feature_map", feature_map, appearance_kernel.shape[0],
                              "the layer's appearance kernel")
    feature_size = (tf.shape(feature_map)[1], tf.shape(feature_map)[2])
    dtype = compute_dtype(feature_map.dtype)
    finite, boxes = object_inputs.finite_boxes(tf.cast(boxes, dtype))
    embed = lambda values: tf.reshape(sinusoid(values, embedding_dim),
                                      tf.concat([tf.shape(values)[:-1], [-1]], 0))
    box_terms = tf.einsum("bne,kep->bnkp", embed(boxes), tf.cast(box_projection, dtype))
    pixel_terms = tf.matmul(embed(pixel_centers(feature_size, stride, dtype)),
                            tf.cast(image_projection, dtype))  # [H*W, P]
    geometric = tf.einsum("bnkp,lp->bnkl", box_terms, pixel_terms)
    pixels = tf.reshape(at_least_float32(feature_map),
                        [tf.shape(feature_map)[0], -1, feature_map.shape[-1]])
    appearance = tf.matmul(pixels, tf.cast(appearance_kernel, pixels.dtype))  # [B, H*W, K]
    logits = geometric + tf.cast(tf.expand_dims(tf.transpose(appearance, [0, 2, 1]), 1), dtype)
    keep = tf.expand_dims(support_mask(boxes, feature_size, stride, context)
                          & tf.expand_dims(finite, -1), 2)
    weights = tf.nn.softmax(tf.where(keep, logits, _MASKED_LOGIT), axis=-1)
    return weights * tf.cast(keep, weights.dtype)
