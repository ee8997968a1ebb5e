"""NumPy references of the spatial-temporal relation math (float64, loops
where that is clearer), written from docs/tracking.md."""

import numpy as np


def numpy_temporal_attention(features, mask, vector):
    """`[..., T, D]`, `[..., T]`, `[D]` -> pooled `[..., D]`, attention `[..., T]`."""
    features = np.asarray(features, np.float64)
    lead = features.shape[:-2]
    flat_features = features.reshape(-1, *features.shape[-2:])
    flat_mask = np.asarray(mask, bool).reshape(-1, features.shape[-2])
    pooled = np.zeros((len(flat_features), features.shape[-1]))
    attention = np.zeros(flat_mask.shape)
    for index, (frames, observed) in enumerate(zip(flat_features, flat_mask)):
        if not observed.any():
            continue
        logits = frames[observed] @ vector
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        attention[index, observed] = weights
        pooled[index] = weights @ frames[observed]
    return pooled.reshape(*lead, -1), attention.reshape(*lead, -1)


def _centre_size(box):
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2]), np.maximum([x2 - x1, y2 - y1], 1e-6)


def numpy_pair_geometry(track_boxes, track_mask, detection_boxes):
    """`[M, T, 4]`, `[M, T]`, `[N, 4]` (xyxy) -> features `[M, N, 6]`, valid `[M, N]`."""
    track_boxes = np.asarray(track_boxes, np.float64)
    detection_boxes = np.asarray(detection_boxes, np.float64)
    count, length = track_mask.shape
    features = np.zeros((count, len(detection_boxes), 6))
    valid = np.zeros((count, len(detection_boxes)), bool)
    for m in range(count):
        observed = [t for t in range(length)
                    if track_mask[m, t] and np.isfinite(track_boxes[m, t]).all()]
        if not observed:
            continue
        last = observed[-1]
        centre, size = _centre_size(track_boxes[m, last])
        gap = length - last
        velocity = np.zeros(2)
        if len(observed) > 1:  # the mean velocity over the window
            first = observed[0]
            velocity = (centre - _centre_size(track_boxes[m, first])[0]) / (last - first)
        for n, box in enumerate(detection_boxes):
            if not np.isfinite(box).all():
                continue
            detection_centre, detection_size = _centre_size(box)
            shift = detection_centre - centre
            features[m, n] = [*(shift / size), *np.log(detection_size / size),
                              *((shift - gap * velocity) / size)]
            valid[m, n] = True
    return features, valid


def numpy_pair_similarity(track_features, detection_features, track_boxes, track_mask,
                          detection_boxes, weights):
    """One batch element: the similarity `[M, N]` (0 for invalid pairs).

    `weights`: the layer's weights in order (relation track, relation
    detection, relation bias, cosine, geometry kernel, geometry bias, the
    hidden (kernel, bias) pairs, output kernel, output bias).
    """
    (relation_track, relation_detection, relation_bias, cosine_kernel, geometry_kernel,
     geometry_bias), rest = weights[:6], weights[6:]
    hidden, (output_kernel, output_bias) = rest[:-2], rest[-2:]
    geometry, valid = numpy_pair_geometry(track_boxes, track_mask, detection_boxes)
    similarity = np.zeros(valid.shape)
    for m, track in enumerate(np.asarray(track_features, np.float64)):
        for n, detection in enumerate(np.asarray(detection_features, np.float64)):
            relation = track @ relation_track + detection @ relation_detection + relation_bias
            a, b = track @ cosine_kernel, detection @ cosine_kernel
            cosine = a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
            embedded = np.maximum(geometry[m, n] @ geometry_kernel + geometry_bias, 0)
            values = np.concatenate([relation, [cosine], embedded])
            for kernel, bias in zip(hidden[::2], hidden[1::2]):
                values = np.maximum(values @ kernel + bias, 0)
            logit = (values @ output_kernel + output_bias)[0]
            similarity[m, n] = 1 / (1 + np.exp(-logit)) if valid[m, n] else 0.0
    return similarity
