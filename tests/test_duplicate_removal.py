"""Learned duplicate removal: candidates, targets and loss against NumPy,
the layer's contract and its combined-NMS-style detections."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.layers import DuplicateRemoval
from keras_relnet.ops.duplicate_removal import (
    detections,
    duplicate_removal_loss,
    duplicate_removal_targets,
    top_candidates,
)
from tests.layer_contract import (
    assert_loss_gradients_match_finite_differences,
    randomise_weights,
)
from tests.numpy_duplicate_removal import numpy_loss, numpy_targets

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def crowded_scene(seed, rois=12, classes=3, gts=4):
    """Noisy copies of a few ground-truth boxes, `[1, rois, ...]` arrays."""
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 6, size=(gts, 2))
    gt_boxes = np.concatenate([corner, corner + rng.uniform(2, 4, size=(gts, 2))], -1)
    gt_classes = rng.integers(0, classes, size=gts)
    source = rng.integers(0, gts, size=rois)
    boxes = gt_boxes[source] + rng.normal(scale=0.4, size=(rois, 4))
    scores = rng.dirichlet(np.ones(classes), size=rois)
    return (scores[None].astype("float32"), boxes[None].astype("float32"),
            gt_boxes[None].astype("float32"), gt_classes[None].astype("int32"))


def test_top_candidates_sorted_and_padded():
    scores, boxes, _, _ = crowded_scene(0, rois=5)
    mask = np.array([[True, True, False, True, True]])
    top_scores, top_boxes, indices, valid = top_candidates(
        tf.constant(scores), tf.constant(boxes), 7, tf.constant(mask))
    assert top_scores.shape == (1, 3, 7) and top_boxes.shape == (1, 3, 7, 4)
    np.testing.assert_array_equal(valid.numpy().sum(-1), [[4, 4, 4]])
    for c in range(3):
        order = [i for i in np.argsort(-scores[0, :, c], kind="stable") if mask[0, i]]
        np.testing.assert_array_equal(indices.numpy()[0, c, :4], order)
        np.testing.assert_allclose(top_boxes.numpy()[0, c, :4], boxes[0, order])
    class_boxes = np.repeat(boxes[:, :, None], 3, axis=2) + np.arange(3)[None, None, :, None]
    _, per_class, _, _ = top_candidates(tf.constant(scores), tf.constant(class_boxes), 3)
    np.testing.assert_allclose(per_class.numpy()[0, 2, 0],
                               class_boxes[0, np.argmax(scores[0, :, 2]), 2])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_targets_and_loss_match_numpy(seed):
    scores, boxes, gt_boxes, gt_classes = crowded_scene(seed)
    gt_classes[0, -1] = -1  # a padding ground truth
    s0, candidate_boxes, _, valid = top_candidates(tf.constant(scores), tf.constant(boxes), 8)
    targets = duplicate_removal_targets(candidate_boxes, s0, valid, tf.constant(gt_boxes),
                                        tf.constant(gt_classes), THRESHOLDS)
    want = numpy_targets(candidate_boxes.numpy(), s0.numpy(), valid.numpy(), gt_boxes,
                         gt_classes, THRESHOLDS)
    np.testing.assert_array_equal(targets.numpy(), want)
    assert want.sum() > 0
    final = np.random.default_rng(seed).uniform(0.01, 0.99, size=want.shape).astype("float32")
    loss = duplicate_removal_loss(tf.constant(final), targets, valid)
    np.testing.assert_allclose(float(loss), numpy_loss(final, want, valid.numpy()), rtol=1e-5)


def test_no_ground_truth_gives_no_positives():
    scores, boxes, _, _ = crowded_scene(4)
    s0, candidate_boxes, _, valid = top_candidates(tf.constant(scores), tf.constant(boxes), 4)
    targets = duplicate_removal_targets(candidate_boxes, s0, valid, tf.zeros([1, 0, 4]),
                                        tf.zeros([1, 0], tf.int32))
    assert targets.shape == (1, 3, 4, 5) and float(tf.reduce_sum(targets)) == 0.0


def small_layer(**kwargs):
    return DuplicateRemoval(top_k=6, embedding_dim=16, rank_dim=32, num_heads=2, key_dim=4,
                            query_chunk_size=4, **kwargs)


def test_layer_outputs_and_initial_scores():
    scores, boxes, _, _ = crowded_scene(5)
    features = np.random.default_rng(5).normal(size=(1, 12, 8)).astype("float32")
    layer = small_layer()
    outputs = layer(scores, boxes, features)
    assert outputs["scores"].shape == (1, 3, 6, 5)
    # The final bias starts at -3: s1 ~ sigmoid(-3) before training.
    ratio = outputs["scores"].numpy() / outputs["initial_scores"].numpy()[..., None]
    np.testing.assert_allclose(ratio, 1 / (1 + np.exp(3)), rtol=0.05)


def test_detect_is_combined_nms_shaped():
    scores, boxes, _, _ = crowded_scene(6)
    features = np.zeros((1, 12, 8), "float32")
    layer = small_layer(max_detections=10)
    mine = layer.detect(scores, boxes, features)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None], scores, 10, 10, iou_threshold=0.5, score_threshold=1e-3)
    for key, value in mine.items():
        reference = getattr(nms, key)
        assert value.shape == reference.shape and value.dtype == reference.dtype, key
    count = int(mine["valid_detections"][0])
    assert np.all(np.diff(mine["nmsed_scores"].numpy()[0, :count]) <= 0)
    assert np.all(mine["nmsed_scores"].numpy()[0, count:] == 0)


def test_detections_keep_the_best_over_classes():
    scores = tf.constant([[[0.9, 0.2], [0.4, 0.0005]]])  # [B, C, n]
    boxes = tf.reshape(tf.range(16, dtype=tf.float32), [1, 2, 2, 4])
    out = detections(scores, boxes, tf.ones([1, 2, 2], tf.bool), max_detections=5)
    np.testing.assert_allclose(out["nmsed_scores"].numpy(), [[0.9, 0.4, 0.2, 0, 0]])
    np.testing.assert_allclose(out["nmsed_classes"].numpy(), [[0, 1, 0, 0, 0]])
    np.testing.assert_allclose(out["nmsed_boxes"].numpy()[0, 1], [8, 9, 10, 11])
    assert int(out["valid_detections"][0]) == 3


def test_gradients_flow_into_scores_and_match_finite_differences():
    scores, boxes, gt_boxes, gt_classes = crowded_scene(7, rois=6, classes=2, gts=2)
    scores = tf.Variable(scores.astype("float64"))
    features = tf.constant(np.random.default_rng(7).normal(size=(1, 6, 4)))
    layer = DuplicateRemoval(top_k=4, embedding_dim=4, rank_dim=8, num_heads=2, key_dim=2,
                             iou_thresholds=(0.3, 0.6), dtype="float64")
    layer(scores, boxes, features)
    randomise_weights(layer, 8, 0.5)

    def loss():
        outputs = layer(scores, boxes, features)
        targets = duplicate_removal_targets(outputs["boxes"], outputs["initial_scores"],
                                            outputs["valid"], gt_boxes, gt_classes, (0.3, 0.6))
        return duplicate_removal_loss(outputs["scores"], targets, outputs["valid"])

    loss = tf.function(loss)
    variables = [scores] + layer.trainable_variables
    gradients = assert_loss_gradients_match_finite_differences(loss, variables, atol=1e-6,
                                                               rtol=1e-5)
    assert float(tf.reduce_max(tf.abs(gradients[0]))) > 0  # end to end: s0 gets a gradient


def test_keras_round_trip(tmp_path):
    scores, boxes = keras.Input((None, 3)), keras.Input((None, 4))
    features = keras.Input((None, 8))
    layer = small_layer(name="learned_nms")
    model = keras.Model([scores, boxes, features], layer(scores, boxes, features)["scores"])
    randomise_weights(layer)
    data = crowded_scene(9)[:2] + (np.ones((1, 12, 8), "float32"),)
    model.save(tmp_path / "nms.keras")
    restored = keras.models.load_model(tmp_path / "nms.keras")
    np.testing.assert_array_equal(np.asarray(restored(list(data))), np.asarray(model(list(data))))
    assert DuplicateRemoval.from_config(layer.get_config()).get_config() == layer.get_config()


def test_xla_matches_eager():
    scores, boxes, _, _ = crowded_scene(10)
    features = np.random.default_rng(10).normal(size=(1, 12, 8)).astype("float32")
    layer = small_layer()
    randomise_weights(layer(scores, boxes, features) and layer, 11, 0.3)
    eager = layer(scores, boxes, features)["scores"].numpy()
    xla = tf.function(lambda *a: layer(*a)["scores"], jit_compile=True)
    np.testing.assert_allclose(xla(scores, boxes, features).numpy(), eager, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    scores, boxes, _, _ = crowded_scene(12)
    features = np.random.default_rng(12).normal(size=(1, 12, 8)).astype("float32")
    full = small_layer()
    full(scores, boxes, features)
    randomise_weights(full, 13, 0.3)
    keras.mixed_precision.set_global_policy(policy)
    mixed = small_layer()
    mixed(scores, boxes, features)
    mixed.set_weights(full.get_weights())
    got = mixed(scores, boxes, features)["scores"]
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), full(scores, boxes, features)["scores"].numpy(),
                               atol=0.02)


@pytest.mark.parametrize("shapes, name", [
    (((1, 5, 3), (1, 5, 5), (1, 5, 8)), "`boxes`"),
    (((1, 5, 3), (1, 5, 2, 4), (1, 5, 8)), "`boxes`"),
    (((1, 5, 3), (1, 4, 4), (1, 5, 8)), "`boxes`"),
    (((1, 5, 3), (1, 5, 4), (1, 6, 8)), "`features`"),
    (((1, 5), (1, 5, 4), (1, 5, 8)), "`scores`"),
])
def test_bad_inputs_raise_value_error(shapes, name):
    arrays = [np.zeros(shape, "float32") for shape in shapes]
    with pytest.raises(ValueError, match=name):
        small_layer()(*arrays)


@pytest.mark.parametrize("arguments, name", [
    ({"iou_thresholds": ()}, "iou_thresholds"), ({"iou_thresholds": (0.5, 1.2)}, "iou_thresholds"),
    ({"top_k": 0}, "top_k"), ({"rank_dim": 7}, "rank_dim"),
])
def test_bad_arguments_raise_value_error(arguments, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        DuplicateRemoval(**arguments)


def test_mirrored_strategy_matches_one_device():
    from tests.layer_contract import assert_mirrored_fit_matches_one_device

    def build_model():
        scores, boxes, features = keras.Input((12, 3)), keras.Input((12, 4)), keras.Input((12, 8))
        final = small_layer()(scores, boxes, features)["scores"]
        pooled = keras.layers.Flatten()(final)
        return keras.Model([scores, boxes, features], keras.layers.Dense(2)(pooled))

    scenes = [crowded_scene(seed) for seed in range(4)]
    data = (np.concatenate([s[0] for s in scenes]), np.concatenate([s[1] for s in scenes]),
            np.random.default_rng(0).normal(size=(4, 12, 8)).astype("float32"))
    assert_mirrored_fit_matches_one_device(build_model, data, np.arange(4) % 2)


def test_a_non_finite_candidate_is_dropped_and_the_rest_is_exact():
    scores, boxes, _, _ = crowded_scene(8)
    features = np.random.default_rng(8).normal(size=(1, 12, 8)).astype("float32")
    layer = small_layer(max_detections=20)
    layer(scores, boxes, features)
    randomise_weights(layer, 3, 0.2)
    without = np.ones((1, 12), bool)
    without[0, 3] = False
    want = layer.detect(scores, boxes, features, roi_mask=without)
    assert int(want["valid_detections"][0]) > 0
    broken_boxes, broken_scores = boxes.copy(), scores.copy()
    broken_boxes[0, 3, 1] = np.nan
    broken_scores[0, 3] = np.nan  # a NaN score drops the RoI from that class: here all
    for inputs in [(scores, broken_boxes), (broken_scores, boxes)]:
        got = layer.detect(*inputs, features)
        for key in want:
            np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


def test_no_rois_gives_no_detections():
    layer = small_layer()
    outputs = layer.detect(np.zeros((2, 0, 3), "float32"), np.zeros((2, 0, 4), "float32"),
                           np.zeros((2, 0, 8), "float32"))
    assert outputs["valid_detections"].numpy().tolist() == [0, 0]
    assert outputs["nmsed_boxes"].shape == (2, 100, 4)


@pytest.mark.parametrize("mask, message", [
    (np.ones((1, 11), bool), "`scores` and `roi_mask` must have the same objects size"),
    (np.ones((2, 12), bool), "`scores` and `roi_mask` must have the same batch size"),
    (np.ones((1, 12), "float32"), "`roi_mask` must be a bool tensor"),
])
def test_calls_after_build_check_the_roi_mask(mask, message):
    scores, boxes, _, _ = crowded_scene(9)
    features = np.zeros((1, 12, 8), "float32")
    layer = small_layer()
    layer(scores, boxes, features)
    with pytest.raises(ValueError, match=message):
        layer(scores, boxes, features, roi_mask=mask)
    with pytest.raises(ValueError, match="`scores` and `features` must have the same batch"):
        layer(scores, boxes, np.zeros((2, 12, 8), "float32"))
