"""Learned duplicate removal against greedy NMS on generated crowded scenes.

Each scene holds a few objects of three classes, some of them overlapping
an object of the same class by IoU 0.5-0.8 (the case greedy NMS gets wrong), and a detector's
output: several noisy detections per object whose scores only loosely follow
their localisation quality, a few false positives, and per-detection features
that resemble the object they came from (RoI features of one object look
alike). `DuplicateRemoval` is trained on such scenes for a few hundred Adam
steps; on held-out scenes its AP at IoU 0.5 (pycocotools) is compared with
`tf.image.combined_non_max_suppression` at IoU 0.5.

Run: `.venv/bin/python examples/learned_nms.py [--steps 400]`.
"""

import argparse
import contextlib
import io
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from keras_relnet.layers import DuplicateRemoval  # noqa: E402
from keras_relnet.ops.duplicate_removal import (  # noqa: E402
    duplicate_removal_loss,
    duplicate_removal_targets,
)

CLASSES = 3
FEATURE_DIM = 16
MAX_OBJECTS = 8
MAX_DETECTIONS_PER_SCENE = 64
IMAGE_SIZE = 128.0


def iou(a, b):
    low, high = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.maximum(high - low, 0))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def scene_objects(rng):
    """Ground-truth boxes (yxyx) and classes; about half come in overlapping pairs."""
    boxes, classes = [], []
    while len(boxes) < rng.integers(3, MAX_OBJECTS - 1):
        size = rng.uniform(20, 45, size=2)
        corner = rng.uniform(0, IMAGE_SIZE - size)
        box = np.concatenate([corner, corner + size])
        cls = int(rng.integers(CLASSES))
        boxes.append(box), classes.append(cls)
        if rng.uniform() < 0.5:  # a same-class neighbour overlapping it by IoU ~0.5-0.8
            shift = np.zeros(2)
            axis = rng.integers(2)
            shift[axis] = rng.uniform(0.1, 0.3) * size[axis] * rng.choice([-1, 1])
            neighbour = np.clip(box + np.concatenate([shift, shift]), 0, IMAGE_SIZE)
            if np.all(neighbour[2:] - neighbour[:2] > 10):
                boxes.append(neighbour), classes.append(cls)
    return np.array(boxes[:MAX_OBJECTS]), np.array(classes[:MAX_OBJECTS])


def scene_detections(rng, gt_boxes, gt_classes):
    """Noisy detections of every object plus false positives, as a detector gives."""
    boxes, scores, features = [], [], []
    identities = rng.normal(size=(len(gt_boxes), FEATURE_DIM))
    for box, cls, identity in zip(gt_boxes, gt_classes, identities):
        size = np.tile(box[2:] - box[:2], 2)
        for _ in range(rng.integers(3, 8)):
            noisy = box + rng.normal(scale=0.08, size=4) * size
            quality = iou(noisy, box)
            true_score = 1 / (1 + np.exp(-(6 * (quality - 0.6) + rng.normal(scale=1.0))))
            class_scores = (1 - true_score) * rng.dirichlet(np.ones(CLASSES))
            class_scores[cls] = true_score
            boxes.append(noisy), scores.append(class_scores)
            features.append(identity + rng.normal(scale=0.5, size=FEATURE_DIM))
    for _ in range(rng.integers(0, 4)):
        size = rng.uniform(15, 40, size=2)
        corner = rng.uniform(0, IMAGE_SIZE - size)
        boxes.append(np.concatenate([corner, corner + size]))
        scores.append(rng.dirichlet(np.ones(CLASSES)) * rng.uniform(0.05, 0.4))
        features.append(rng.normal(size=FEATURE_DIM))
    return np.array(boxes), np.array(scores), np.array(features)


def crowded_scenes(count, seed):
    """`count` padded scenes as a dict of arrays (detections and ground truth)."""
    rng = np.random.default_rng(seed)
    data = {
        "scores": np.zeros((count, MAX_DETECTIONS_PER_SCENE, CLASSES), "float32"),
        "boxes": np.zeros((count, MAX_DETECTIONS_PER_SCENE, 4), "float32"),
        "features": np.zeros((count, MAX_DETECTIONS_PER_SCENE, FEATURE_DIM), "float32"),
        "roi_mask": np.zeros((count, MAX_DETECTIONS_PER_SCENE), bool),
        "gt_boxes": np.zeros((count, MAX_OBJECTS, 4), "float32"),
        "gt_classes": -np.ones((count, MAX_OBJECTS), "int32"),
    }
    for index in range(count):
        gt_boxes, gt_classes = scene_objects(rng)
        boxes, scores, features = scene_detections(rng, gt_boxes, gt_classes)
        kept = slice(0, min(len(boxes), MAX_DETECTIONS_PER_SCENE))
        rows = len(boxes[kept])
        data["boxes"][index, :rows], data["scores"][index, :rows] = boxes[kept], scores[kept]
        data["features"][index, :rows], data["roi_mask"][index, :rows] = features[kept], True
        data["gt_boxes"][index, :len(gt_boxes)] = gt_boxes
        data["gt_classes"][index, :len(gt_boxes)] = gt_classes
    return data


def duplicate_removal_model():
    """A paper-shaped learned NMS, narrowed for a CPU (n = 32 candidates per class)."""
    return DuplicateRemoval(top_k=32, embedding_dim=64, rank_dim=128, num_heads=8, key_dim=16,
                            max_detections=100)


def train(layer, scenes, steps, batch_size=16, learning_rate=2e-3, seed=0):
    """Adam on the duplicate-removal loss; returns the per-step losses."""
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    inputs = ("scores", "boxes", "features")
    layer(*(scenes[name][:1] for name in inputs), roi_mask=scenes["roi_mask"][:1])

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            outputs = layer(batch["scores"], batch["boxes"], batch["features"],
                            roi_mask=batch["roi_mask"])
            targets = duplicate_removal_targets(
                outputs["boxes"], outputs["initial_scores"], outputs["valid"],
                batch["gt_boxes"], batch["gt_classes"], layer.iou_thresholds)
            loss = duplicate_removal_loss(outputs["scores"], targets, outputs["valid"])
        gradients = tape.gradient(loss, layer.trainable_variables)
        optimizer.apply_gradients(zip(gradients, layer.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        chosen = rng.choice(len(scenes["scores"]), batch_size, replace=False)
        losses.append(float(step({key: value[chosen] for key, value in scenes.items()})))
    return losses


def greedy_nms(scenes, iou_threshold=0.5):
    """Per-class greedy NMS, `tf.image.combined_non_max_suppression`."""
    scores = np.where(scenes["roi_mask"][..., None], scenes["scores"], 0.0)
    result = tf.image.combined_non_max_suppression(
        scenes["boxes"][:, :, None], scores, 100, 100, iou_threshold=iou_threshold,
        score_threshold=1e-3, clip_boxes=False)  # pixel boxes, not [0, 1]
    return {key: getattr(result, key).numpy() for key in
            ("nmsed_boxes", "nmsed_scores", "nmsed_classes", "valid_detections")}


def learned_nms(layer, scenes):
    out = layer.detect(scenes["scores"], scenes["boxes"], scenes["features"],
                       roi_mask=scenes["roi_mask"])
    return {key: value.numpy() for key, value in out.items()}


def ap50(scenes, detections):
    """COCO AP at IoU 0.5 (pycocotools) of combined-NMS-style detections."""
    to_xywh = lambda b: [float(b[1]), float(b[0]), float(b[3] - b[1]), float(b[2] - b[0])]
    images, annotations, results = [], [], []
    for image_id in range(len(scenes["scores"])):
        images.append({"id": image_id, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for box, cls in zip(scenes["gt_boxes"][image_id], scenes["gt_classes"][image_id]):
            if cls >= 0:
                xywh = to_xywh(box)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": int(cls) + 1, "bbox": xywh,
                                    "area": xywh[2] * xywh[3], "iscrowd": 0})
        for k in range(int(detections["valid_detections"][image_id])):
            results.append({"image_id": image_id, "bbox": to_xywh(detections["nmsed_boxes"][image_id, k]),
                            "category_id": int(detections["nmsed_classes"][image_id, k]) + 1,
                            "score": float(detections["nmsed_scores"][image_id, k])})
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1} for c in range(CLASSES)]}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), "bbox")
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
    return float(evaluation.stats[1])


def compare(train_scenes=400, test_scenes=150, steps=400, seed=0):
    """Trains learned NMS and returns `(learned AP50, greedy NMS AP50, losses)`."""
    tf.keras.utils.set_random_seed(seed)
    layer = duplicate_removal_model()
    losses = train(layer, crowded_scenes(train_scenes, seed), steps, seed=seed)
    held_out = crowded_scenes(test_scenes, seed + 1)
    return ap50(held_out, learned_nms(layer, held_out)), ap50(held_out, greedy_nms(held_out)), losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--train-scenes", type=int, default=400)
    parser.add_argument("--test-scenes", type=int, default=150)
    args = parser.parse_args()
    start = time.perf_counter()
    learned, greedy, losses = compare(args.train_scenes, args.test_scenes, args.steps)
    print(f"loss {losses[0]:.4f} -> {np.mean(losses[-20:]):.4f} in {args.steps} steps "
          f"({time.perf_counter() - start:.0f} s)")
    print(f"AP@0.5 on {args.test_scenes} held-out scenes: learned duplicate removal "
          f"{learned:.3f}, greedy NMS (IoU 0.5) {greedy:.3f}")
    if learned <= greedy:
        raise SystemExit("learned duplicate removal did not beat greedy NMS")


if __name__ == "__main__":
    main()
