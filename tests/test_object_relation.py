"""Box geometry ops and the ObjectRelation layer against the NumPy spec."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.layers import ObjectRelation
from keras_relnet.ops.box_geometry import geometry_embedding, relative_geometry
from keras_relnet.ops.portable import portable_graphs
from tests.layer_contract import (
    assert_mirrored_fit_matches_one_device,
    assert_loss_gradients_match_finite_differences,
    randomise_weights,
)
from tests.numpy_object_relation import numpy_embedding, numpy_geometry, numpy_relation


def random_boxes(batch, count, seed, box_format="yxyx", scale=10.0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, scale, size=(batch, count, 2))
    size = rng.uniform(0.1 * scale, 0.5 * scale, size=(batch, count, 2))
    return np.concatenate([corner, corner + size], axis=-1).astype("float32")


def random_features(batch, count, width, seed):
    return np.random.default_rng(seed).normal(size=(batch, count, width)).astype("float32")


def built_layer(features, boxes, seed=0, scale=0.3, **kwargs):
    layer = ObjectRelation(**kwargs)
    layer(features, boxes)
    randomise_weights(layer, seed, scale)
    return layer


def relation_weights(layer):
    return [w.numpy().astype(np.float64) for w in layer.family_weights if w is not None]


@pytest.mark.parametrize("box_format", ["yxyx", "xyxy"])
@pytest.mark.parametrize("size_offset", [0.0, 1.0])
def test_geometry_and_embedding_match_numpy(box_format, size_offset):
    boxes = random_boxes(2, 6, 0)
    geometry = relative_geometry(tf.constant(boxes), box_format=box_format,
                                 size_offset=size_offset)
    want = numpy_geometry(boxes, box_format, size_offset)
    np.testing.assert_allclose(geometry.numpy(), want, atol=1e-5)
    for size in (64, 16):  # from the float64 geometry: x100 would amplify float32 rounding
        np.testing.assert_allclose(geometry_embedding(tf.constant(want), size).numpy(),
                                   numpy_embedding(want, size), atol=1e-5)


@pytest.mark.parametrize("use_geometry", [True, False])
@pytest.mark.parametrize("query_chunk_size", [None, 3])
def test_layer_matches_numpy(use_geometry, query_chunk_size):
    features, boxes = random_features(2, 7, 16, 1), random_boxes(2, 7, 2)
    mask = np.random.default_rng(3).uniform(size=(2, 7)) > 0.3
    layer = built_layer(features, boxes, num_heads=4, key_dim=3, use_geometry=use_geometry,
                        query_chunk_size=query_chunk_size, dtype="float64")
    got, attention = layer(features, boxes, key_mask=mask, return_attention_scores=True)
    want, want_attention = numpy_relation(features, boxes, relation_weights(layer), 4, mask,
                                          use_geometry=use_geometry)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(attention.numpy(), want_attention, atol=1e-5)


@pytest.mark.parametrize("portable", [False, True])
def test_a_last_query_chunk_of_one_matches_numpy_in_float32(portable):
    # 9 objects in chunks of 4 leave a chunk of one: TF 2.20's oneDNN batch
    # matmul gets [B > 1, 1, N, D] x [D, K] wrong on AVX-512 CPUs.
    features, boxes = random_features(3, 9, 16, 4), random_boxes(3, 9, 5)
    layer = built_layer(features, boxes, num_heads=4, query_chunk_size=4)
    with portable_graphs() if portable else contextlib.nullcontext():
        got = layer(features, boxes)
    want, _ = numpy_relation(features, boxes, relation_weights(layer), 4)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-4)


def test_xyxy_boxes_and_residual():
    features, boxes = random_features(1, 5, 8, 4), random_boxes(1, 5, 5)
    layer = built_layer(features, boxes, num_heads=2, box_format="xyxy", residual=True,
                        dtype="float64")
    want, _ = numpy_relation(features, boxes, relation_weights(layer), 2, box_format="xyxy")
    np.testing.assert_allclose(layer(features, boxes).numpy(), np.maximum(features + want, 0),
                               atol=1e-5)


def test_paper_parameter_count():
    layer = ObjectRelation(num_heads=16)
    layer.build((None, None, 1024), (None, None, 4))
    assert layer.count_params() == 3_149_840


def test_permuting_objects_permutes_outputs():
    features, boxes = random_features(2, 9, 16, 6), random_boxes(2, 9, 7)
    mask = np.random.default_rng(8).uniform(size=(2, 9)) > 0.3
    layer = built_layer(features, boxes, num_heads=4, query_chunk_size=4)
    order = np.random.default_rng(9).permutation(9)
    outputs = layer(features, boxes, key_mask=mask).numpy()
    permuted = layer(features[:, order], boxes[:, order], key_mask=mask[:, order]).numpy()
    np.testing.assert_allclose(permuted, outputs[:, order], atol=1e-5)


def test_masked_padding_does_not_change_valid_objects():
    features, boxes = random_features(1, 5, 16, 10), random_boxes(1, 5, 11)
    layer = built_layer(features, boxes, num_heads=4)
    padded_features = np.concatenate([features, random_features(1, 3, 16, 12)], axis=1)
    padded_boxes = np.concatenate([boxes, np.zeros((1, 3, 4), "float32")], axis=1)
    mask = np.arange(8)[None] < 5
    padded = layer(padded_features, padded_boxes, key_mask=mask).numpy()
    np.testing.assert_allclose(padded[:, :5], layer(features, boxes).numpy(), atol=1e-5)


@pytest.mark.parametrize("count", [0, 1, 4])
def test_degenerate_inputs_give_finite_outputs(count):
    features = random_features(2, count, 8, 13)
    boxes = np.zeros((2, count, 4), "float32")  # zero-size and identical boxes
    layer = built_layer(random_features(1, 2, 8, 0), random_boxes(1, 2, 0), num_heads=2,
                        query_chunk_size=3)
    no_keys = np.zeros((2, count), bool)
    for mask in (None, no_keys):
        outputs, attention = layer(features, boxes, key_mask=mask, return_attention_scores=True)
        assert outputs.shape == (2, count, 8)
        assert np.isfinite(outputs.numpy()).all() and np.isfinite(attention.numpy()).all()
    bias = layer.family_weights.output_bias.numpy()
    np.testing.assert_allclose(layer(features, boxes, key_mask=no_keys).numpy(),
                               np.broadcast_to(bias, (2, count, 8)))


def test_attention_rows_sum_to_one_over_keys():
    features, boxes = random_features(2, 6, 8, 14), random_boxes(2, 6, 15)
    mask = np.array([[True] * 6, [True, False] * 3])
    layer = built_layer(features, boxes, num_heads=2)
    _, attention = layer(features, boxes, key_mask=mask, return_attention_scores=True)
    np.testing.assert_allclose(attention.numpy().sum(-1), 1.0, atol=1e-6)
    assert np.all(attention.numpy()[1, :, :, 1::2] == 0)


def test_xla_and_unknown_object_count_match_eager():
    features, boxes = random_features(2, 11, 16, 16), random_boxes(2, 11, 17)
    layer = built_layer(features, boxes, num_heads=4, query_chunk_size=4)
    eager = layer(features, boxes).numpy()
    xla = tf.function(lambda f, b: layer(f, b), jit_compile=True)
    # float32 rounding of the geometry is amplified x100 by the embedding.
    np.testing.assert_allclose(xla(features, boxes).numpy(), eager, atol=1e-4)
    spec = [tf.TensorSpec([None, None, 16]), tf.TensorSpec([None, None, 4])]
    dynamic = tf.function(lambda f, b: layer(f, b), input_signature=spec)
    np.testing.assert_allclose(dynamic(features, boxes).numpy(), eager, atol=1e-4)
    assert dynamic(features[:, :3], boxes[:, :3]).shape == (2, 3, 16)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_geometry_in_float32(policy):
    # Pixel coordinates near 1000 are 0.5 px apart in float16: the layer must
    # not cast boxes to the compute dtype.
    features, boxes = random_features(1, 6, 16, 18), random_boxes(1, 6, 19, scale=1000.0)
    full = built_layer(features, boxes, num_heads=4)
    keras.mixed_precision.set_global_policy(policy)
    mixed = ObjectRelation(num_heads=4)
    mixed(features, boxes)
    mixed.set_weights(full.get_weights())
    outputs, attention = mixed(features, boxes, return_attention_scores=True)
    assert outputs.dtype == policy.split("_")[1] and attention.dtype == tf.float32
    want, want_attention = full(features, boxes, return_attention_scores=True)
    np.testing.assert_allclose(attention.numpy(), want_attention.numpy(), atol=0.02)
    got = tf.cast(outputs, tf.float32).numpy()
    assert np.abs(got - want.numpy()).mean() < 0.05 * np.abs(want.numpy()).mean()


def test_keras_round_trip(tmp_path):
    features = keras.Input((None, 16))
    boxes = keras.Input((None, 4))
    mask = keras.Input((None,), dtype="bool")
    layer = ObjectRelation(num_heads=4, key_dim=2, size_offset=1.0, query_chunk_size=5,
                           name="relation")
    outputs, attention = layer(features, boxes, key_mask=mask, return_attention_scores=True)
    model = keras.Model([features, boxes, mask], [outputs, attention])
    randomise_weights(layer)
    inputs = [random_features(2, 6, 16, 20), random_boxes(2, 6, 21), np.ones((2, 6), bool)]
    model.save(tmp_path / "relation.keras")
    restored = keras.models.load_model(tmp_path / "relation.keras")
    for got, want in zip(restored(inputs), model(inputs)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert ObjectRelation.from_config(layer.get_config()).get_config() == layer.get_config()


def test_gradients_match_finite_differences():
    features = tf.Variable(random_features(1, 4, 8, 22).astype("float64"))
    boxes = random_boxes(1, 4, 23)
    mask = np.array([[True, True, False, True]])
    layer = ObjectRelation(num_heads=2, query_chunk_size=3, dtype="float64")
    layer(features, boxes)
    randomise_weights(layer, 24, 0.5)
    upstream = tf.constant(np.random.default_rng(25).normal(size=(1, 4, 8)))
    loss = tf.function(lambda: tf.reduce_sum(layer(features, boxes, key_mask=mask) * upstream))
    variables = [features] + layer.trainable_variables
    assert_loss_gradients_match_finite_differences(loss, variables, atol=1e-6, rtol=1e-6)


def test_mirrored_strategy_matches_one_device():
    features, boxes = random_features(4, 5, 8, 26), random_boxes(4, 5, 27)

    def build_model():
        feature_input, box_input = keras.Input((5, 8)), keras.Input((5, 4))
        related = ObjectRelation(num_heads=2, residual=True)(feature_input, box_input)
        pooled = keras.layers.GlobalAveragePooling1D()(related)
        return keras.Model([feature_input, box_input], keras.layers.Dense(2)(pooled))

    assert_mirrored_fit_matches_one_device(build_model, (features, boxes), np.arange(4) % 2)


@pytest.mark.parametrize("arguments, call, message", [
    ({}, ((2, 5, 16), (2, 5, 3)), "`boxes`"),
    ({}, ((2, 5, 16), (2, 6, 4)), "`boxes` must have the same objects"),
    ({}, ((2, 5, 16), (3, 5, 4)), "`boxes` must have the same batch"),
    ({}, ((2, 5, 16), (2, 5, 4), (2, 4)), "`key_mask` must have the same objects"),
    ({"num_heads": 3}, ((2, 5, 16), (2, 5, 4)), "`num_heads`"),
    ({}, ((2, 16), (2, 4)), "`features`"),
])
def test_bad_inputs_raise_value_error(arguments, call, message):
    shapes = [np.zeros(shape, "float32") for shape in call]
    layer = ObjectRelation(num_heads=arguments.get("num_heads", 4))
    with pytest.raises(ValueError, match=message):
        layer(shapes[0], shapes[1], key_mask=shapes[2] > 0 if len(shapes) > 2 else None)


@pytest.mark.parametrize("arguments, name", [
    ({"box_format": "cxcywh"}, "box_format"),
    ({"geometry_dim": 12}, "geometry_dim"),
    ({"num_heads": 0}, "num_heads"),
    ({"query_chunk_size": 0}, "query_chunk_size"),
])
def test_bad_arguments_raise_value_error(arguments, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        ObjectRelation(**arguments)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("residual", [False, True])
def test_a_non_finite_box_is_not_a_key_and_leaves_the_others_exact(bad, residual):
    features, boxes = random_features(2, 6, 16, 4), random_boxes(2, 6, 5)
    layer = built_layer(features, boxes, num_heads=4, residual=residual, query_chunk_size=4)
    broken = boxes.copy()
    broken[0, 2, 1] = bad
    masked = np.ones((2, 6), bool)
    masked[0, 2] = False
    got, attention = layer(features, broken, return_attention_scores=True)
    want = layer(features, boxes, key_mask=masked)
    others = np.ones((2, 6), bool)
    others[0, 2] = False
    np.testing.assert_array_equal(got.numpy()[others], want.numpy()[others])
    # Its own row: the relation of a query with no keys, the output bias.
    bias = layer.family_weights.output_bias.numpy()
    own = np.maximum(features[0, 2] + bias, 0) if residual else bias
    np.testing.assert_allclose(got.numpy()[0, 2], own, atol=1e-6)
    assert np.isfinite(attention.numpy()).all() and not attention.numpy()[0, :, :, 2].any()


def test_a_masked_key_with_non_finite_features_contributes_exact_zeros():
    features, boxes = random_features(1, 5, 16, 6), random_boxes(1, 5, 7)
    layer = built_layer(features, boxes, num_heads=4)
    mask = np.array([[True, True, False, True, True]])
    poisoned = features.copy()
    poisoned[0, 2] = np.nan
    got, want = layer(poisoned, boxes, key_mask=mask), layer(features, boxes, key_mask=mask)
    keep = [0, 1, 3, 4]
    np.testing.assert_array_equal(got.numpy()[0, keep], want.numpy()[0, keep])


@pytest.mark.parametrize("call, message", [
    (((1, 5, 8), (1, 5, 4)), r"`features` must have 16 channels \(the width of the relation "
                             r"weights\); received shape \(1, 5, 8\)"),
    (((2, 5, 16), (1, 5, 4)), r"`features` and `boxes` must have the same batch size; received "
                              r"shapes \(2, 5, 16\) and \(1, 5, 4\)"),
    (((1, 5, 16), (1, 5, 4), (1, 4)), "`features` and `key_mask` must have the same objects"),
])
def test_calls_after_build_are_checked_too(call, message):
    layer = ObjectRelation(num_heads=4)
    layer(np.zeros((1, 5, 16), "float32"), np.zeros((1, 5, 4), "float32"))
    shapes = [np.zeros(shape, "float32") for shape in call]
    with pytest.raises(ValueError, match=message):
        layer(shapes[0], shapes[1], key_mask=shapes[2] > 0 if len(shapes) > 2 else None)
    with pytest.raises(ValueError, match="`key_mask` must be a bool tensor; received dtype float32"):
        layer(np.zeros((1, 5, 16), "float32"), np.zeros((1, 5, 4), "float32"),
              key_mask=np.ones((1, 5), "float32"))


def test_dynamic_object_counts_are_asserted_in_graphs():
    layer = ObjectRelation(num_heads=4)
    layer(np.zeros((1, 5, 16), "float32"), np.zeros((1, 5, 4), "float32"))
    traced = tf.function(layer, input_signature=[tf.TensorSpec([1, None, 16]),
                                                 tf.TensorSpec([1, None, 4])])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="`features` and `boxes` must have the same objects size"):
        traced(tf.zeros([1, 5, 16]), tf.zeros([1, 4, 4]))
