"""RelationBoxHead: the 2fc+RM head against a NumPy composition of the spec."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.layers import RelationBoxHead
from tests.layer_contract import (
    assert_loss_gradients_match_finite_differences,
    randomise_weights,
)
from tests.numpy_object_relation import numpy_relation
from tests.test_object_relation import random_boxes


def rois(batch, count, seed, size=(3, 3, 4)):
    return np.random.default_rng(seed).normal(size=(batch, count) + size).astype("float32")


def built_head(features, boxes, seed=0, **kwargs):
    head = RelationBoxHead(**{"num_classes": 3, "fc_dim": 8, "num_heads": 2, **kwargs})
    head(features, boxes)
    randomise_weights(head, seed, 0.3)
    return head


def numpy_head(head, features, boxes, mask=None):
    hidden = features.reshape(features.shape[:2] + (-1,)).astype(np.float64)
    relations = head.relations or [None] * head.num_fcs
    for fc, relation in zip(head.fcs, relations):
        kernel, bias = (w.numpy() for w in fc.weights)
        hidden = hidden @ kernel + bias
        if relation is not None:
            weights = [w.numpy() for w in relation.family_weights]
            hidden = hidden + numpy_relation(hidden, boxes, weights, 2, mask)[0]
        hidden = np.maximum(hidden, 0)
    linear = lambda layer: hidden @ layer.weights[0].numpy() + layer.weights[1].numpy()
    return linear(head.classifier), linear(head.box_regressor)


@pytest.mark.parametrize("use_relation", [True, False])
def test_matches_numpy_composition(use_relation):
    features, boxes = rois(2, 5, 0), random_boxes(2, 5, 1)
    mask = np.array([[True] * 5, [True, True, True, False, False]])
    head = built_head(features, boxes, use_relation=use_relation, dtype="float64")
    logits, deltas = head(features, boxes, roi_mask=mask)
    want_logits, want_deltas = numpy_head(head, features, boxes, mask)
    assert logits.shape == (2, 5, 3) and deltas.shape == (2, 5, 12)
    np.testing.assert_allclose(logits.numpy(), want_logits, atol=1e-5)
    np.testing.assert_allclose(deltas.numpy(), want_deltas, atol=1e-5)


def test_paper_sized_head_parameters():
    head = RelationBoxHead(num_classes=81)
    head.build((None, None, 7, 7, 256), (None, None, 4))
    fcs = (7 * 7 * 256 + 1) * 1024 + (1024 + 1) * 1024
    outputs = (1024 + 1) * 81 + (1024 + 1) * 324
    assert head.count_params() == fcs + 2 * 3_149_840 + outputs
    plain = RelationBoxHead(num_classes=81, use_relation=False, class_agnostic_boxes=True)
    plain.build((None, None, 7, 7, 256), (None, None, 4))
    assert plain.count_params() == fcs + (1024 + 1) * (81 + 4)


def test_padding_rois_do_not_change_valid_rois():
    features, boxes = rois(1, 4, 2), random_boxes(1, 4, 3)
    head = built_head(features, boxes)
    padded = head(np.concatenate([features, rois(1, 2, 4)], 1),
                  np.concatenate([boxes, np.zeros((1, 2, 4), "float32")], 1),
                  roi_mask=np.arange(6)[None] < 4)
    for got, want in zip(padded, head(features, boxes)):
        np.testing.assert_allclose(got.numpy()[:, :4], want.numpy(), atol=1e-5)


def test_keras_round_trip_and_xla(tmp_path):
    features, boxes = keras.Input((None, 3, 3, 4)), keras.Input((None, 4))
    head = RelationBoxHead(num_classes=3, fc_dim=8, num_heads=2, name="box_head")
    model = keras.Model([features, boxes], head(features, boxes))
    randomise_weights(head)
    data = [rois(2, 5, 5), random_boxes(2, 5, 6)]
    model.save(tmp_path / "head.keras")
    restored = keras.models.load_model(tmp_path / "head.keras")
    for got, want in zip(restored(data), model(data)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    xla = tf.function(lambda *a: model(list(a)), jit_compile=True)
    for got, want in zip(xla(*data), model(data)):
        np.testing.assert_allclose(got.numpy(), np.asarray(want), atol=1e-4)
    assert RelationBoxHead.from_config(head.get_config()).get_config() == head.get_config()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    features, boxes = rois(1, 5, 7), random_boxes(1, 5, 8, scale=800.0)
    full = built_head(features, boxes)
    keras.mixed_precision.set_global_policy(policy)
    mixed = RelationBoxHead(num_classes=3, fc_dim=8, num_heads=2)
    mixed(features, boxes)
    mixed.set_weights(full.get_weights())
    for got, want in zip(mixed(features, boxes), full(features, boxes)):
        assert got.dtype == policy.split("_")[1]
        got = tf.cast(got, tf.float32).numpy()
        assert np.abs(got - want.numpy()).mean() < 0.05 * np.abs(want.numpy()).mean()


def test_gradients_match_finite_differences():
    features = tf.Variable(rois(1, 3, 9, size=(2, 2, 2)).astype("float64"))
    boxes = random_boxes(1, 3, 10)
    head = RelationBoxHead(num_classes=2, fc_dim=4, num_heads=2, dtype="float64")
    head(features, boxes)
    randomise_weights(head, 11, 0.5)
    loss = tf.function(lambda: sum(tf.reduce_sum(t * t) for t in head(features, boxes)))
    variables = [features] + head.trainable_variables
    assert_loss_gradients_match_finite_differences(loss, variables, atol=1e-6, rtol=1e-5)


def test_bad_inputs_raise_value_error():
    head = RelationBoxHead(num_classes=3, fc_dim=8, num_heads=2)
    with pytest.raises(ValueError, match="`roi_features`"):
        head(np.zeros((1, 5, 36), "float32"), np.zeros((1, 5, 4), "float32"))
    with pytest.raises(ValueError, match="`boxes`"):
        head(rois(1, 5, 0), np.zeros((1, 4, 4), "float32"))
    with pytest.raises(ValueError, match="`num_classes`"):
        RelationBoxHead(num_classes=0)


def test_mirrored_strategy_matches_one_device():
    from tests.layer_contract import assert_mirrored_fit_matches_one_device

    def build_model():
        crops, boxes = keras.Input((4, 2, 2, 3)), keras.Input((4, 4))
        logits, deltas = RelationBoxHead(num_classes=3, fc_dim=8, num_heads=2)(crops, boxes)
        pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Concatenate()([logits, deltas]))
        return keras.Model([crops, boxes], keras.layers.Dense(2)(pooled))

    data = (rois(4, 4, 12, size=(2, 2, 3)), random_boxes(4, 4, 13))
    assert_mirrored_fit_matches_one_device(build_model, data, np.arange(4) % 2)


def test_a_non_finite_box_leaves_the_other_rois_exact():
    features, boxes = rois(2, 6, 8), np.abs(rois(2, 6, 9, size=(4,))) * 10
    boxes[..., 2:] += boxes[..., :2] + 1
    head = built_head(features, boxes)
    broken = boxes.copy()
    broken[1, 4] = np.nan
    mask = np.ones((2, 6), bool)
    mask[1, 4] = False
    for got, want in zip(head(features, broken), head(features, boxes, roi_mask=mask)):
        assert np.isfinite(got.numpy()).all()
        np.testing.assert_array_equal(got.numpy()[mask], want.numpy()[mask])


def test_calls_after_build_are_checked_too():
    head = built_head(rois(1, 5, 0), np.zeros((1, 5, 4), "float32"))
    with pytest.raises(ValueError, match=r"`roi_features` and `roi_mask` must have the same rois"
                                         r"|`roi_features` and `roi_mask` must have the same "
                                         r"objects"):
        head(rois(1, 5, 0), np.zeros((1, 5, 4), "float32"), roi_mask=np.ones((1, 4), bool))
    with pytest.raises(ValueError, match=r"`roi_features` and `boxes` must have the same batch"):
        head(rois(2, 5, 0), np.zeros((1, 5, 4), "float32"))
