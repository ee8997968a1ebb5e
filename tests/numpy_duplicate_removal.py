"""NumPy duplicate-removal targets and loss written straight from
`docs/object_relation.md` (duplicate removal; explicit loops)."""

import numpy as np


def numpy_iou(a, b):
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.maximum(high - low, 0))
    union = np.prod(np.maximum(a[2:] - a[:2], 0)) + np.prod(np.maximum(b[2:] - b[:2], 0)) - inter
    return inter / union if union > 0 else 0.0


def numpy_targets(boxes, scores, valid, gt_boxes, gt_classes, thresholds):
    batch, classes, count, _ = boxes.shape
    targets = np.zeros((batch, classes, count, len(thresholds)))
    for b in range(batch):
        for c in range(classes):
            gts = [g for g in range(len(gt_classes[b])) if gt_classes[b][g] == c]
            for t, threshold in enumerate(thresholds):
                best_for_gt = {}
                for i in range(count):
                    if not valid[b, c, i] or not gts:
                        continue
                    ious = [numpy_iou(boxes[b, c, i], gt_boxes[b, g]) for g in gts]
                    match = gts[int(np.argmax(ious))]
                    if max(ious) > threshold and (
                            match not in best_for_gt
                            or scores[b, c, i] > scores[b, c, best_for_gt[match]]):
                        best_for_gt[match] = i
                for i in best_for_gt.values():
                    targets[b, c, i, t] = 1.0
    return targets


def numpy_loss(scores, targets, valid, positive_weight=4.0, epsilon=1e-8):
    batch, classes, count, thresholds = scores.shape
    total = 0.0
    for b in range(batch):
        image = 0.0
        for c in range(classes):
            for i in range(count):
                if not valid[b, c, i]:
                    continue
                for t in range(thresholds):
                    p, y = scores[b, c, i, t], targets[b, c, i, t]
                    image -= positive_weight * y * np.log(p + epsilon) + (1 - y) * np.log(
                        1 - p + epsilon)
        total += image / (count * thresholds)
    return total / batch
