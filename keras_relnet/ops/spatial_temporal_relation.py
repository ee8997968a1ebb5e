"""Spatial-temporal relation for tracking (Xu et al., "Spatial-Temporal
Relation Networks for Multi-Object Tracking", ICCV 2019): the temporal
attention over a tracklet's past frames and the features of a (tracklet,
detection) pair. The math and the choices: `docs/tracking.md`.

The spatial relation (the objects of one frame) is the object relation op,
`keras_relnet.ops.object_relation.object_relation`; this module holds what
tracking adds to it:

    a_t  = softmax_t(<w_T, f'_t>) over the tracklet's observed frames
    f_T  = sum_t a_t f'_t                        (zero when none is observed)
    loc  = ((x_D - x) / w, (y_D - y) / h, log(w_D / w), log(h_D / h))
    mot  = ((x_D - x - g v_x) / w, (y_D - y - g v_y) / h)

with (x, y, w, h) the centre and size of the tracklet's last observed box,
g the frames since it, and v its mean velocity over the window (from its first
to its last observed box: less noisy than the last step).

Histories are `[..., T, ...]` with frame T-1 the frame before the current one;
`mask` marks the frames in which the tracklet was observed. A box with a
non-finite coordinate counts as not observed (the library's bad-box policy).
"""

from typing import NamedTuple, Tuple

import tensorflow as tf

from keras_relnet.ops.box_geometry import centers_and_sizes
from keras_relnet.ops.context import dense
from keras_relnet.ops.precision import at_least_float32

_MASKED_LOGIT = -1e9
_COSINE_EPSILON = 1e-12


def temporal_attention(features, mask, attention_vector):
    """Attention pooling of a tracklet's features over its past frames.

    Args:
        features: `[..., T, D]` (spatially related) features per past frame.
        mask: `[..., T]` bool, True where the tracklet was observed; the
            features of the other frames are ignored (even if not finite).
        attention_vector: `[D]`, the learned `w_T`.

    Returns:
        `(pooled [..., D] in the feature dtype, attention [..., T] float32)`;
        a tracklet observed in no frame pools to zeros with zero attention.

    Example:
    >>> features = tf.constant([[[1.0, 0.0], [0.0, 1.0]]])
    >>> pooled, attention = temporal_attention(features, tf.constant([[True, False]]),
    ...                                        tf.constant([1.0, 1.0]))
    >>> pooled.numpy().tolist(), attention.numpy().tolist()
    ([[1.0, 0.0]], [[1.0, 0.0]])
    """
    mask = tf.convert_to_tensor(mask)
    observed = tf.expand_dims(mask, -1)
    features = tf.where(observed, features, tf.zeros_like(features))
    logits = tf.linalg.matvec(at_least_float32(features),
                              at_least_float32(tf.convert_to_tensor(attention_vector)))
    attention = tf.nn.softmax(tf.where(mask, logits, _MASKED_LOGIT), axis=-1)
    attention *= tf.cast(mask, attention.dtype)  # all masked: zeros, not 1/T
    pooled = tf.reduce_sum(tf.expand_dims(tf.cast(attention, features.dtype), -1) * features,
                           axis=-2)
    return pooled, attention


def observed_boxes(boxes, mask):
    """The mask of a box history with non-finite boxes unobserved, and the
    boxes with those set to zeros.

    Args:
        boxes: `[..., T, 4]`.
        mask: `[..., T]` bool.

    Returns:
        `(mask [..., T], boxes [..., T, 4])`.
    """
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    mask = tf.logical_and(tf.convert_to_tensor(mask), finite)
    return mask, tf.where(tf.expand_dims(mask, -1), boxes, tf.zeros_like(boxes))


def last_observation(boxes, mask, box_format="xyxy"):
    """The last observed box of each tracklet, the frames since it and its velocity.

    Args:
        boxes: `[..., T, 4]` past boxes, frame T-1 the previous frame.
        mask: `[..., T]` bool, the observed frames.
        box_format: "xyxy" or "yxyx".

    Returns:
        A dict of tensors (float32, or float64 for float64 boxes): `center_x`, `center_y`, `width`, `height`
        `[...]` of the last observed box; `gap` `[...]`, frames from it to
        the current frame (1: observed in the previous frame; T + 1: never);
        `velocity_x`, `velocity_y` `[...]`, the centre's mean displacement
        per frame from the first to the last observation in the window (0
        with fewer than two);
        `observed` `[...]` bool, any frame observed.

    Example:
    >>> boxes = tf.constant([[[0.0, 0, 2, 2], [0, 0, 0, 0], [4, 0, 6, 2]]])
    >>> last = last_observation(boxes, tf.constant([[True, False, True]]))
    >>> [float(last[key][0]) for key in ("center_x", "gap", "velocity_x")]
    [5.0, 1.0, 2.0]
    """
    mask, boxes = observed_boxes(boxes, mask)
    length = tf.shape(mask)[-1]
    steps = tf.range(length)
    # The index of the first and of the last observed frame (-1: none).
    last = tf.reduce_max(tf.where(mask, steps, -1), axis=-1)
    first = tf.reduce_min(tf.where(mask, steps, length), axis=-1)
    center_x, center_y, width, height = centers_and_sizes(boxes, box_format)
    # A one-hot sum, not a batched gather: it exports to every runtime as-is.
    pick = lambda values, index: tf.reduce_sum(
        values * tf.one_hot(index, length, dtype=values.dtype), axis=-1)
    elapsed = tf.cast(tf.maximum(last - first, 1), center_x.dtype)
    has_two = last > first
    velocity = lambda values: tf.where(
        has_two, (pick(values, last) - pick(values, first)) / elapsed, 0.0)
    return dict(center_x=pick(center_x, last), center_y=pick(center_y, last),
                width=pick(width, last), height=pick(height, last),
                gap=tf.cast(length - last, center_x.dtype),
                velocity_x=velocity(center_x), velocity_y=velocity(center_y),
                observed=last >= 0)


def pair_geometry(last, detection_boxes, box_format="xyxy"):
    """The location and motion features of every (tracklet, detection) pair.

    Args:
        last: `last_observation` of `M` tracklets (each entry `[B, M]`).
        detection_boxes: `[B, N, 4]`.
        box_format: "xyxy" or "yxyx".

    Returns:
        `(features [B, M, N, 6] in the boxes' dtype (at least float32),
        valid [B, M, N] bool)`: the location
        `(dx / w, dy / h, log(w_D / w), log(h_D / h))` then the motion
        `((dx - g v_x) / w, (dy - g v_y) / h)`; zeros and False for a pair whose
        tracklet was never observed or whose detection box is not finite.

    Example:
    >>> last = last_observation(tf.constant([[[[0.0, 0, 2, 2]]]]), tf.constant([[[True]]]))
    >>> features, valid = pair_geometry(last, tf.constant([[[1.0, 0, 3, 2]]]))
    >>> features.numpy()[0, 0, 0, :2].tolist(), bool(valid[0, 0, 0])
    ([0.5, 0.0], True)
    """
    detection_boxes = tf.cast(detection_boxes, last["center_x"].dtype)
    finite = tf.reduce_all(tf.math.is_finite(detection_boxes), axis=-1)
    detection_boxes = tf.where(tf.expand_dims(finite, -1), detection_boxes,
                               tf.zeros_like(detection_boxes))
    x, y, w, h = centers_and_sizes(detection_boxes, box_format)
    track = lambda key: tf.expand_dims(last[key], -1)  # [B, M, 1]
    detection = lambda values: tf.expand_dims(values, -2)  # [B, 1, N]
    dx = detection(x) - track("center_x")
    dy = detection(y) - track("center_y")
    width, height = track("width"), track("height")
    features = tf.stack([
        dx / width, dy / height,
        tf.math.log(detection(w) / width), tf.math.log(detection(h) / height),
        (dx - track("gap") * track("velocity_x")) / width,
        (dy - track("gap") * track("velocity_y")) / height,
    ], axis=-1)
    valid = tf.logical_and(track("observed"), tf.expand_dims(finite, -2))
    return tf.where(tf.expand_dims(valid, -1), features, tf.zeros_like(features)), valid


def pairwise_cosine(tracklets, detections):
    """The cosine similarity of every (tracklet, detection) embedding pair.

    Args:
        tracklets: `[B, M, E]`.
        detections: `[B, N, E]`.

    Returns:
        `[B, M, N]` in float32 (0 where an embedding is zero).

    Example:
    >>> pairwise_cosine(tf.constant([[[1.0, 0.0]]]), tf.constant([[[1.0, 1.0]]])).numpy().round(3)
    array([[[0.707]]], dtype=float32)
    """
    normalise = lambda t: tf.math.l2_normalize(at_least_float32(t), axis=-1,
                                               epsilon=_COSINE_EPSILON)
    return tf.einsum("bme,bne->bmn", normalise(tracklets), normalise(detections))


class PairWeights(NamedTuple):
    """The weights of the pair similarity.

    `relation_track_kernel`/`relation_detection_kernel` `[D, R]` (the two
    halves of `W_R`), `relation_bias` `[R]`; `cosine_kernel` `[D, C]`;
    `geometry_kernel` `[6, G]`, `geometry_bias` `[G]`; `hidden`: one
    `(kernel, bias)` per hidden layer; `output_kernel` `[H, 1]`, `output_bias` `[1]`.
    """

    relation_track_kernel: tf.Tensor
    relation_detection_kernel: tf.Tensor
    relation_bias: tf.Tensor
    cosine_kernel: tf.Tensor
    geometry_kernel: tf.Tensor
    geometry_bias: tf.Tensor
    hidden: Tuple[Tuple[tf.Tensor, tf.Tensor], ...]
    output_kernel: tf.Tensor
    output_bias: tf.Tensor


def pair_similarity_logits(track_features, detection_features, track_boxes, track_mask,
                           detection_boxes, weights, detection_mask=None, box_format="xyxy"):
    """The similarity logit of every (tracklet, detection) pair.

    The pair's features, concatenated, go through the MLP:

        phi_R = W_R [f_T ; f_D]                  (as W_R1 f_T + W_R2 f_D + b)
        phi_C = cos(W_C f_T, W_C f_D)
        phi_G = ReLU(W_G [loc ; mot] + b_G)      (`pair_geometry`)
        logit = MLP([phi_R ; phi_C ; phi_G])     (ReLU hidden layers, linear output)

    Args:
        track_features: `[B, M, D]`, the pooled tracklet features.
        detection_features: `[B, N, D]`.
        track_boxes: `[B, M, T, 4]`, each tracklet's past boxes.
        track_mask: `[B, M, T]` bool, its observed frames.
        detection_boxes: `[B, N, 4]`.
        weights: `PairWeights`.
        detection_mask: optional `[B, N]` bool, False for padding.
        box_format: "xyxy" or "yxyx".

    Returns:
        `(logits [B, M, N] in the feature dtype, valid [B, M, N] bool)`:
        `valid` is False for a tracklet never observed, a detection whose box
        is not finite or a padded detection; such a pair's logit is
        meaningless and its similarity is 0 (`pair_similarity`).
    """
    dtype = detection_features.dtype
    last = last_observation(track_boxes, track_mask, box_format)
    geometry, valid = pair_geometry(last, detection_boxes, box_format)
    if detection_mask is not None:
        valid = tf.logical_and(valid, tf.expand_dims(tf.cast(detection_mask, tf.bool), -2))
    cast = lambda t: tf.cast(t, dtype)
    relation = (tf.expand_dims(dense(track_features, weights.relation_track_kernel), 2)
                + tf.expand_dims(dense(detection_features, weights.relation_detection_kernel,
                                       weights.relation_bias), 1))
    cosine = pairwise_cosine(dense(track_features, weights.cosine_kernel),
                             dense(detection_features, weights.cosine_kernel))
    embedded = tf.nn.relu(dense(geometry, weights.geometry_kernel, weights.geometry_bias))
    hidden = tf.concat([relation, cast(tf.expand_dims(cosine, -1)), cast(embedded)], axis=-1)
    for kernel, bias in weights.hidden:
        hidden = tf.nn.relu(dense(hidden, kernel, bias))
    logits = tf.squeeze(dense(hidden, weights.output_kernel, weights.output_bias), -1)
    return logits, valid


def pair_similarity(logits, valid):
    """`sigmoid(logits)` where `valid`, exactly 0 elsewhere.

    Example:
    >>> pair_similarity(tf.constant([0.0, 5.0]), tf.constant([True, False])).numpy().tolist()
    [0.5, 0.0]
    """
    return tf.where(valid, tf.sigmoid(logits), tf.zeros_like(logits))
