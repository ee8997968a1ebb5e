"""Learned duplicate removal ("learned NMS"): candidates, targets, loss and
detections (Hu et al., "Relation Networks for Object Detection", CVPR 2018).
The math: `docs/object_relation.md` (duplicate removal).

Layout: per image and class, the top `n` scoring RoIs are the candidates,
`[B, C, n, ...]`; classes index the columns of the (background-free) scores.
An RoI whose score or box has a non-finite value is never a candidate (of
that class), so it neither takes a candidate's place nor reaches the
detections; the other candidates are those of the RoIs without it.
"""

import tensorflow as tf

from keras_relnet.ops import object_inputs
from keras_relnet.ops.box_geometry import sinusoid
from keras_relnet.ops.precision import at_least_float32

IOU_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def top_candidates(scores, boxes, top_k, roi_mask=None):
    """The `top_k` highest-scoring RoIs of every class.

    Args:
        scores: `[B, R, C]` class probabilities without background.
        boxes: `[B, R, C, 4]` class-specific or `[B, R, 4]` shared boxes.
        top_k: candidates per class, n. With fewer RoIs the rest is padding.
        roi_mask: optional `[B, R]` bool, False for padding RoIs.

    Returns:
        `(scores [B, C, n], boxes [B, C, n, 4], indices [B, C, n] int32 RoI
        indices, valid [B, C, n] bool)`, sorted by score within a class.

    Example:
    >>> s, b, i, v = top_candidates(tf.constant([[[0.2], [0.9]]]), tf.zeros([1, 2, 4]), 3)
    >>> i.numpy().tolist(), v.numpy().tolist()
    ([[[1, 0, 0]]], [[[True, True, False]]])
    """
    scores, boxes = tf.convert_to_tensor(scores), tf.convert_to_tensor(boxes)
    scores, boxes, _, roi_mask = check_candidate_inputs(scores, boxes, roi_mask=roi_mask)
    usable = tf.math.is_finite(scores)
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)  # [B, R] or [B, R, C]
    usable &= tf.expand_dims(finite, -1) if boxes.shape.rank == 3 else finite
    if roi_mask is not None:
        usable &= tf.expand_dims(roi_mask, -1)
    # One padding RoI past the end: gathers stay in range with no RoIs (R = 0).
    scores, boxes, usable = (_with_padding_roi(t) for t in (scores, boxes, usable))
    count = tf.shape(scores)[1] - 1
    # Unusable RoIs rank below every real one; `count < top_k` is padded up.
    ranked = tf.where(usable, scores, -1.0)
    ranked = tf.pad(tf.transpose(ranked, [0, 2, 1]),
                    [[0, 0], [0, 0], [0, tf.maximum(top_k - count - 1, 0)]], constant_values=-2.0)
    top_scores, indices = tf.math.top_k(ranked, k=top_k)
    valid = top_scores >= 0.0
    indices = tf.where(valid, indices, 0)
    if boxes.shape.rank == 3:
        class_boxes = tf.gather(boxes, indices, batch_dims=1)
    else:
        per_class = tf.transpose(boxes, [0, 2, 1, 3])  # [B, C, R, 4]
        class_boxes = tf.gather(per_class, indices, batch_dims=2)
    candidate_scores = tf.gather(tf.transpose(scores, [0, 2, 1]), indices, batch_dims=2)
    zero = tf.zeros_like(candidate_scores)
    return (tf.where(valid, candidate_scores, zero),
            tf.where(tf.expand_dims(valid, -1), class_boxes, 0.0), indices, valid)


def _with_padding_roi(tensor):
    """`tensor [B, R, ...]` with one more RoI of zeros (False) at the end."""
    return tf.pad(tensor, [[0, 0], [0, 1]] + [[0, 0]] * (tensor.shape.rank - 2))


def check_candidate_inputs(scores, boxes, features=None, roi_mask=None):
    """Checks that the duplicate removal inputs agree (see `object_inputs`).

    Args:
        scores: `[B, R, C]`.
        boxes: `[B, R, 4]` or `[B, R, C, 4]`.
        features: optional `[B, R, D]`.
        roi_mask: optional `[B, R]` bool.

    Returns:
        `(scores, boxes, features, roi_mask)` as tensors (None stays None),
        past any run-time assertion.

    Raises:
        ValueError: naming the two arguments that disagree.

    Example:
    >>> check_candidate_inputs(tf.zeros([1, 3, 2]), tf.zeros([2, 3, 4]))
    Traceback (most recent call last):
    ...
    ValueError: `scores` and `boxes` must have the same batch size; received shapes (1, 3, 2) and (2, 3, 4).
    """
    scores, boxes = tf.convert_to_tensor(scores), tf.convert_to_tensor(boxes)
    object_inputs.check_rank("scores", scores, 3, "[batch, rois, classes]")
    if boxes.shape.rank not in (3, 4) or boxes.shape[-1] != 4:
        raise ValueError("`boxes` must have shape [batch, rois, 4] or [batch, rois, classes, 4]; "
                         f"received shape {object_inputs.shape_text(boxes)}.")
    rois = ((0, 0, "batch"), (1, 1, "rois"))
    if boxes.shape.rank == 4:
        rois += ((2, 2, "classes"),)
    scores, boxes = object_inputs.check_same_dims("scores", scores, "boxes", boxes, rois)
    if features is not None:
        features = tf.convert_to_tensor(features)
        object_inputs.check_rank("features", features, 3, "[batch, rois, channels]")
        scores, features = object_inputs.check_same_dims("scores", scores, "features", features,
                                                         rois[:2])
    if roi_mask is not None:
        scores, roi_mask = object_inputs.check_object_mask("roi_mask", roi_mask, "scores", scores)
    return scores, boxes, features, roi_mask


def refine_candidates(scores, boxes, features, top_k, rank_dim, embed_appearance, embed_rank,
                      relate, classify, roi_mask=None):
    """The duplicate removal network's forward pass, over its sub-networks.

    Per class, the top `top_k` RoIs are embedded (appearance + score rank),
    related among themselves and classified per IoU threshold:

        x  = embed_appearance(feature) + embed_rank(sinusoid(rank))
        s1 = sigmoid(classify(relate(x, boxes, valid)))

    Both layer fronts (Keras 3 and tf_keras) pass their own sub-layers here.

    Args:
        scores: `[B, R, C]` class probabilities without background (s0).
        boxes: `[B, R, C, 4]` class-specific or `[B, R, 4]` shared boxes.
        features: `[B, R, D]` head features.
        top_k: candidates per class, n.
        rank_dim: size of the rank sinusoid.
        embed_appearance: `[B, R, D] -> [B, R, E]`.
        embed_rank: `[n, rank_dim] -> [n, E]`.
        relate: `(x [B*C, n, E], boxes [B*C, n, 4], key_mask [B*C, n]) -> [B*C, n, E]`,
            the residual relation module.
        classify: `[B*C, n, E] -> [B*C, n, T]` logits.
        roi_mask: optional `[B, R]` bool, False for RoIs that are not candidates.

    Returns:
        A dict: `scores` `[B, C, n, T]` (`s0 * s1`, float32 or float64),
        `initial_scores` (s0) `[B, C, n]`, `boxes` `[B, C, n, 4]`, `valid`
        (bool) and `indices` (RoI index) `[B, C, n]`.

    Example:
    >>> out = refine_candidates(
    ...     tf.constant([[[0.9], [0.5]]]), tf.zeros([1, 2, 4]), tf.ones([1, 2, 3]), 2, 4,
    ...     embed_appearance=lambda f: f, embed_rank=lambda r: tf.zeros([2, 3]),
    ...     relate=lambda x, b, m: x, classify=lambda x: tf.zeros_like(x[..., :1]))
    >>> out["scores"].numpy()[0, 0, :, 0]  # s0 * sigmoid(0)
    array([0.45, 0.25], dtype=float32)
    """
    scores, boxes, features, roi_mask = check_candidate_inputs(scores, boxes, features, roi_mask)
    initial_scores, candidate_boxes, indices, valid = top_candidates(
        scores, boxes, top_k, roi_mask)
    batch, classes = tf.shape(indices)[0], tf.shape(indices)[1]
    appearance = tf.gather(_with_padding_roi(embed_appearance(features)), indices, batch_dims=1)
    rank = embed_rank(sinusoid(tf.range(top_k, dtype=tf.float32), rank_dim))
    per_class = lambda t: tf.reshape(t, tf.concat([[batch * classes, top_k], tf.shape(t)[3:]], 0))
    related = relate(per_class(appearance + tf.cast(rank, appearance.dtype)),
                     per_class(candidate_boxes), per_class(valid))
    logits = classify(related)
    dtype = tf.float64 if tf.float64 in (logits.dtype, initial_scores.dtype) else tf.float32
    refined = tf.sigmoid(tf.cast(logits, dtype))
    refined = tf.reshape(refined, [batch, classes, top_k, tf.shape(logits)[-1]])
    return {
        "scores": tf.expand_dims(tf.cast(initial_scores, dtype), -1) * refined,
        "initial_scores": initial_scores,
        "boxes": candidate_boxes,
        "valid": valid,
        "indices": indices,
    }


def pairwise_iou(boxes, other_boxes):
    """IoU of every box with every other box (any consistent corner order).

    Args:
        boxes: `[..., N, 4]`.
        other_boxes: `[..., M, 4]`.

    Returns:
        `[..., N, M]`; 0 for empty boxes.

    Example:
    >>> pairwise_iou(tf.constant([[0.0, 0, 2, 2]]), tf.constant([[1.0, 0, 3, 2]])).numpy()
    array([[0.33333334]], dtype=float32)
    """
    boxes, other_boxes = at_least_float32(boxes), at_least_float32(other_boxes)
    low = tf.maximum(boxes[..., :, None, :2], other_boxes[..., None, :, :2])
    high = tf.minimum(boxes[..., :, None, 2:], other_boxes[..., None, :, 2:])
    intersection = tf.reduce_prod(tf.maximum(high - low, 0.0), axis=-1)
    area = lambda b: tf.reduce_prod(tf.maximum(b[..., 2:] - b[..., :2], 0.0), axis=-1)
    union = area(boxes)[..., :, None] + area(other_boxes)[..., None, :] - intersection
    return tf.math.divide_no_nan(intersection, union)


def duplicate_removal_targets(boxes, scores, valid, gt_boxes, gt_classes,
                              iou_thresholds=IOU_THRESHOLDS):
    """Which candidates should survive, per IoU threshold.

    Each candidate is matched to its highest-IoU ground truth of its class;
    for threshold t, the candidates with IoU > t are the candidates of their
    match, and of those only the one with the highest score is a positive.

    Args:
        boxes: `[B, C, n, 4]` candidate boxes.
        scores: `[B, C, n]` their scores (s0).
        valid: `[B, C, n]` bool.
        gt_boxes: `[B, G, 4]`.
        gt_classes: `[B, G]` int, score-column index of each ground truth;
            negative for padding.
        iou_thresholds: T thresholds.

    Returns:
        `[B, C, n, T]` float32 targets in {0, 1}.

    Example:
    >>> boxes = tf.constant([[[[0.0, 0, 1, 1], [0, 0, 1, 0.9]]]])
    >>> t = duplicate_removal_targets(boxes, tf.constant([[[0.6, 0.9]]]),
    ...     tf.constant([[[True, True]]]), tf.constant([[[0.0, 0, 1, 1]]]),
    ...     tf.constant([[0]]), (0.5, 0.95))
    >>> t.numpy()[0, 0].tolist()  # the higher score wins at 0.5; only the exact box is > 0.95
    [[0.0, 1.0], [1.0, 0.0]]
    """
    classes = tf.range(tf.shape(boxes)[1])
    gt_classes = tf.cast(gt_classes, tf.int32)
    same_class = tf.equal(gt_classes[:, None, :], classes[None, :, None])  # [B, C, G]
    iou = pairwise_iou(boxes, gt_boxes[:, None])  # [B, C, n, G]
    iou = tf.where(same_class[:, :, None, :], iou, -1.0)
    # A dummy last column keeps max/argmax defined with no ground truth (G = 0).
    dummy = tf.fill(tf.concat([tf.shape(iou)[:-1], [1]], 0), tf.constant(-1.0, iou.dtype))
    iou = tf.concat([iou, dummy], axis=-1)
    best_iou = tf.reduce_max(iou, axis=-1)
    best_gt = tf.argmax(iou, axis=-1, output_type=tf.int32)
    thresholds = tf.constant(iou_thresholds, best_iou.dtype)
    candidate = (best_iou[..., None] > thresholds) & valid[..., None]  # [B, C, n, T]
    matched = tf.equal(best_gt[..., None], tf.range(tf.shape(gt_boxes)[1]))  # [B, C, n, G]
    contest = candidate[..., None, :] & matched[..., None]  # [B, C, n, G, T]
    contest_scores = tf.where(contest, at_least_float32(scores)[..., None, None], -1.0)
    winner = tf.argmax(contest_scores, axis=2, output_type=tf.int32)  # [B, C, G, T]
    has_winner = tf.reduce_any(contest, axis=2)
    won = tf.equal(winner[:, :, None], tf.range(tf.shape(boxes)[2])[None, None, :, None, None])
    return tf.cast(tf.reduce_any(won & has_winner[:, :, None], axis=3), tf.float32)


def duplicate_removal_loss(scores, targets, valid, positive_weight=4.0, epsilon=1e-8):
    """Weighted binary cross-entropy on the final scores `s0 * s1`.

    Summed over classes, candidates and thresholds, divided by `n * T`, and
    averaged over images.

    Args:
        scores: `[B, C, n, T]`, `s0 * s1`.
        targets: `[B, C, n, T]` from `duplicate_removal_targets`.
        valid: `[B, C, n]` bool; padding candidates do not count.
        positive_weight: weight of the positives (4 in the paper).
        epsilon: inside the logarithms.

    Returns:
        A scalar float32 loss.

    Example:
    >>> float(duplicate_removal_loss(tf.fill([1, 1, 1, 1], 0.5), tf.ones([1, 1, 1, 1]),
    ...                              tf.constant([[[True]]])))  # -4 log 0.5
    2.7725887298583984
    """
    scores, targets = at_least_float32(scores), tf.cast(targets, at_least_float32(scores).dtype)
    losses = -(positive_weight * targets * tf.math.log(scores + epsilon)
               + (1 - targets) * tf.math.log(1 - scores + epsilon))
    losses *= tf.cast(valid, losses.dtype)[..., None]
    per_image = tf.reduce_sum(losses, axis=[1, 2, 3])
    normaliser = tf.cast(tf.shape(scores)[2] * tf.shape(scores)[3], losses.dtype)
    return tf.reduce_mean(per_image / normaliser)


def learned_detections(outputs, max_detections=100, score_threshold=1e-3):
    """Detections from `refine_candidates` outputs: the final score is the mean
    over thresholds of `s0 * s1`, and there is no NMS.

    Args:
        outputs: the dict of `refine_candidates`.
        max_detections, score_threshold: as in `detections`.

    Returns:
        The dict of `detections`.
    """
    return detections(tf.reduce_mean(outputs["scores"], axis=-1), outputs["boxes"],
                      outputs["valid"], max_detections, score_threshold)


def detections(scores, boxes, valid, max_detections=100, score_threshold=1e-3):
    """Top detections over all classes, in `tf.image.combined_non_max_suppression` form.

    Args:
        scores: `[B, C, n]` final scores.
        boxes: `[B, C, n, 4]`.
        valid: `[B, C, n]` bool.
        max_detections: detections kept per image.
        score_threshold: scores at or below it are dropped.

    Returns:
        A dict with `nmsed_boxes [B, max_detections, 4]`, `nmsed_scores` and
        `nmsed_classes` (float, the score column) `[B, max_detections]`, and
        `valid_detections [B]` int32; zero padded past the valid ones.

    Example:
    >>> out = detections(tf.constant([[[0.9, 0.0005]]]), tf.ones([1, 1, 2, 4]),
    ...                  tf.constant([[[True, True]]]), max_detections=3)
    >>> out["valid_detections"].numpy(), out["nmsed_scores"].numpy()
    (array([1], dtype=int32), array([[0.9, 0. , 0. ]], dtype=float32))
    """
    batch, candidates = tf.shape(scores)[0], tf.shape(scores)[2]
    flat_scores = tf.reshape(tf.where(valid, at_least_float32(scores), -1.0), [batch, -1])
    flat_scores = tf.pad(flat_scores, [[0, 0], [0, tf.maximum(max_detections
                                                              - tf.shape(flat_scores)[1], 0)]],
                         constant_values=-1.0)
    top_scores, indices = tf.math.top_k(flat_scores, k=max_detections)
    keep = top_scores > score_threshold
    flat_boxes = tf.reshape(boxes, [batch, -1, 4])
    indices = tf.where(keep, indices, 0)
    return {
        "nmsed_boxes": tf.where(tf.expand_dims(keep, -1), tf.gather(flat_boxes, indices, batch_dims=1),
                                tf.zeros([], boxes.dtype)),
        "nmsed_scores": tf.where(keep, top_scores, 0.0),
        "nmsed_classes": tf.where(keep, tf.cast(indices // candidates, top_scores.dtype), 0.0),
        "valid_detections": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
    }
