"""SpatialRelation, TemporalRelation and PairSimilarity against NumPy, and
their Keras contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.layers import ObjectRelation, PairSimilarity, SpatialRelation, TemporalRelation
from keras_relnet.ops.spatial_temporal_relation import pair_geometry, last_observation
from tests.layer_contract import (
    assert_loss_gradients_match_finite_differences,
    assert_mirrored_fit_matches_one_device,
    randomise_weights,
)
from tests.numpy_tracking import (
    numpy_pair_geometry,
    numpy_pair_similarity,
    numpy_temporal_attention,
)


def random_boxes(shape, seed, scale=100.0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, scale, size=shape + (2,))
    size = rng.uniform(0.1 * scale, 0.5 * scale, size=shape + (2,))
    return np.concatenate([corner, corner + size], axis=-1)


def pair_inputs(batch=2, tracks=4, detections=5, length=6, width=8, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    mask = rng.uniform(size=(batch, tracks, length)) > 0.4
    mask[:, :1] = False  # a tracklet never observed
    mask[:, 1:2] = False
    mask[:, 1:2, -3] = True  # one observation only: no velocity
    return [rng.normal(size=(batch, tracks, width)).astype(dtype),
            rng.normal(size=(batch, detections, width)).astype(dtype),
            random_boxes((batch, tracks, length), seed + 1).astype(dtype), mask,
            random_boxes((batch, detections), seed + 2).astype(dtype)]


def built_pairs(inputs, seed=3, **kwargs):
    layer = PairSimilarity(**kwargs)
    layer(*inputs)
    randomise_weights(layer, seed, 0.5)
    return layer


def numpy_weights(layer):
    w = layer.pair_weights
    hidden = [t.numpy() for pair in w.hidden for t in pair]
    return ([t.numpy() for t in w[:6]] + hidden + [w.output_kernel.numpy(), w.output_bias.numpy()])


# --- TemporalRelation ------------------------------------------------------------------------


def test_temporal_attention_and_its_masking_match_numpy():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 4, 6, 8))
    mask = rng.uniform(size=(3, 4, 6)) > 0.5
    mask[0, 0] = False  # no observed frame: zeros
    mask[0, 1] = [False] * 5 + [True]
    layer = TemporalRelation(dtype="float64")
    layer(features, mask)
    randomise_weights(layer, 1)
    pooled, attention = layer(features, mask, return_attention_scores=True)
    want, want_attention = numpy_temporal_attention(features, mask,
                                                    layer.attention_vector.numpy())
    np.testing.assert_allclose(pooled.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(attention.numpy(), want_attention, atol=1e-5)
    assert not pooled.numpy()[0, 0].any() and not attention.numpy()[0, 0].any()
    np.testing.assert_allclose(pooled.numpy()[0, 1], features[0, 1, 5], atol=1e-12)
    np.testing.assert_allclose(attention.numpy().sum(-1), mask.any(-1).astype(float), atol=1e-6)


def test_temporal_attention_ignores_masked_frames_even_if_not_finite():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(2, 5, 4)).astype("float32")
    mask = np.array([[True, False, True, True, False], [False] * 5])
    layer = TemporalRelation()
    layer(features, mask)
    randomise_weights(layer, 3)
    poisoned = features.copy()
    poisoned[~mask] = np.nan
    np.testing.assert_array_equal(layer(poisoned, mask).numpy(), layer(features, mask).numpy())


def test_temporal_relation_starts_as_the_mean_of_the_observed_frames():
    features = np.arange(12, dtype="float32").reshape(1, 3, 4)
    pooled = TemporalRelation()(features, np.array([[True, False, True]]))
    np.testing.assert_allclose(pooled.numpy(), features[:, [0, 2]].mean(1))


# --- pair features and PairSimilarity --------------------------------------------------------


def test_pair_geometry_matches_numpy():
    track_features, _, track_boxes, mask, detection_boxes = pair_inputs(seed=4)
    detection_boxes[1, 2, 0] = np.nan
    track_boxes[0, 2, 3, 1] = np.inf  # an unobserved frame by the bad-box policy
    last = last_observation(tf.constant(track_boxes), tf.constant(mask))
    got, valid = pair_geometry(last, tf.constant(detection_boxes))
    for batch in range(2):
        want, want_valid = numpy_pair_geometry(track_boxes[batch], mask[batch],
                                               detection_boxes[batch])
        np.testing.assert_array_equal(valid.numpy()[batch], want_valid)
        np.testing.assert_allclose(got.numpy()[batch], want, atol=1e-5, rtol=1e-5)
    assert not valid.numpy()[:, 0].any() and not valid.numpy()[1, :, 2].any()


def test_a_constant_velocity_track_predicts_its_detection_exactly():
    # Observed at frames 0, 1 and 3 of 5, moving +4 px per frame in x: the
    # detection where it should be has zero motion residual.
    boxes = np.array([[[0.0, 0, 10, 20], [4, 0, 14, 20], [0, 0, 0, 0], [12, 0, 22, 20],
                       [0, 0, 0, 0]]])
    mask = np.array([[True, True, False, True, False]])
    last = last_observation(tf.constant(boxes[None]), tf.constant(mask[None]))
    features, _ = pair_geometry(last, tf.constant([[[20.0, 0, 30, 20]]]))
    np.testing.assert_allclose(features.numpy()[0, 0, 0], [0.8, 0, 0, 0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("hidden_units", [(16,), (12, 8)])
def test_pair_similarity_matches_numpy(hidden_units):
    inputs = pair_inputs(seed=5)
    inputs[4][0, 3, 2] = np.nan
    layer = built_pairs(inputs, relation_dim=6, cosine_dim=5, geometry_units=7,
                        hidden_units=hidden_units, dtype="float64")
    got = layer(*inputs).numpy()
    for batch in range(2):
        want = numpy_pair_similarity(*(array[batch] for array in inputs), numpy_weights(layer))
        np.testing.assert_allclose(got[batch], want, atol=1e-5)
    assert not got[:, 0].any() and not got[0, :, 3].any()


def test_padded_detections_get_zero_similarity():
    inputs = pair_inputs(seed=6, dtype="float32")
    layer = built_pairs(inputs)
    detection_mask = np.ones((2, 5), bool)
    detection_mask[1, 4] = False
    got = layer(*inputs, detection_mask=detection_mask).numpy()
    full = layer(*inputs).numpy()
    assert not got[1, :, 4].any()
    np.testing.assert_array_equal(got[detection_mask[:, None, :].repeat(4, 1)],
                                  full[detection_mask[:, None, :].repeat(4, 1)])


def test_pair_similarity_gradients_match_finite_differences():
    inputs = pair_inputs(batch=1, tracks=3, detections=3, length=4, width=4, seed=7)
    layer = built_pairs(inputs, relation_dim=3, cosine_dim=3, geometry_units=3,
                        hidden_units=(4,), dtype="float64")
    tracks, detections = tf.Variable(inputs[0]), tf.Variable(inputs[1])
    upstream = tf.constant(np.random.default_rng(8).normal(size=(1, 3, 3)))
    loss = tf.function(lambda: tf.reduce_sum(
        layer(tracks, detections, *inputs[2:]) * upstream))
    assert_loss_gradients_match_finite_differences(
        loss, [tracks, detections] + layer.trainable_variables, atol=1e-6, rtol=1e-5)


def test_temporal_relation_gradients_match_finite_differences():
    rng = np.random.default_rng(9)
    features = tf.Variable(rng.normal(size=(2, 4, 3)))
    mask = np.array([[True, False, True, True], [False, False, False, True]])
    layer = TemporalRelation(dtype="float64")
    layer(features, mask)
    randomise_weights(layer, 10)
    upstream = tf.constant(rng.normal(size=(2, 3)))
    loss = tf.function(lambda: tf.reduce_sum(layer(features, mask) * upstream))
    assert_loss_gradients_match_finite_differences(loss, [features] + layer.trainable_variables)


# --- SpatialRelation -------------------------------------------------------------------------


def test_spatial_relation_is_features_plus_the_object_relation():
    rng = np.random.default_rng(11)
    features = rng.normal(size=(2, 6, 8)).astype("float32")
    boxes = random_boxes((2, 6), 12).astype("float32")
    boxes[1, 3, 0] = np.nan
    mask = np.ones((2, 6), bool)
    mask[0, 5] = False
    spatial = SpatialRelation(num_heads=2)
    spatial(features, boxes)
    randomise_weights(spatial, 13, 0.3)
    relation = ObjectRelation(num_heads=2, box_format="xyxy")
    relation(features, boxes)
    relation.set_weights(spatial.get_weights())
    np.testing.assert_allclose(spatial(features, boxes, detection_mask=mask).numpy(),
                               features + relation(features, boxes, key_mask=mask).numpy(),
                               atol=1e-6)


def test_spatial_relation_gradients_match_finite_differences():
    rng = np.random.default_rng(14)
    features = tf.Variable(rng.normal(size=(1, 3, 4)))
    boxes = random_boxes((1, 3), 15)
    layer = SpatialRelation(num_heads=2, dtype="float64")
    layer(features, boxes)
    randomise_weights(layer, 16, 0.5)
    upstream = tf.constant(rng.normal(size=(1, 3, 4)))
    loss = tf.function(lambda: tf.reduce_sum(layer(features, boxes) * upstream))
    assert_loss_gradients_match_finite_differences(loss, [features] + layer.trainable_variables)


# --- the contract ----------------------------------------------------------------------------


def layer_cases():
    spatial = ([np.random.default_rng(17).normal(size=(2, 5, 8)).astype("float32"),
                random_boxes((2, 5), 18, scale=1000.0).astype("float32")],
               lambda: SpatialRelation(num_heads=2))
    temporal = ([np.random.default_rng(19).normal(size=(2, 3, 5, 8)).astype("float32"),
                 np.random.default_rng(20).uniform(size=(2, 3, 5)) > 0.3],
                lambda: TemporalRelation())
    pairs = (pair_inputs(seed=21, dtype="float32"), lambda: PairSimilarity(hidden_units=(8,)))
    return {"spatial": spatial, "temporal": temporal, "pairs": pairs}


@pytest.mark.parametrize("case", ["spatial", "temporal", "pairs"])
def test_keras_round_trip_and_config(case, tmp_path):
    inputs, make_layer = layer_cases()[case]
    symbolic = [keras.Input(np.shape(array)[1:], dtype="bool" if array.dtype == bool else None)
                for array in inputs]
    layer = make_layer()
    model = keras.Model(symbolic, layer(*symbolic))
    randomise_weights(layer, 22, 0.3)
    model.save(tmp_path / "layer.keras")
    restored = keras.models.load_model(tmp_path / "layer.keras")
    np.testing.assert_array_equal(np.asarray(restored(inputs)), np.asarray(model(inputs)))
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert model.compute_output_shape([np.shape(a) for a in inputs]) == np.shape(model(inputs))


@pytest.mark.parametrize("case", ["spatial", "temporal", "pairs"])
def test_tf_function_xla_and_unknown_sizes_match_eager(case):
    inputs, make_layer = layer_cases()[case]
    layer = make_layer()
    eager = layer(*inputs)
    randomise_weights(layer, 23, 0.3)
    eager = layer(*inputs).numpy()
    specs = [tf.TensorSpec([None] * np.ndim(a), tf.bool if a.dtype == bool else tf.float32)
             for a in inputs]
    specs = [tf.TensorSpec(spec.shape[:-1].concatenate([np.shape(a)[-1]]), spec.dtype)
             if a.dtype != bool else spec for spec, a in zip(specs, inputs)]
    dynamic = tf.function(lambda *args: layer(*args), input_signature=specs)
    compiled = tf.function(lambda *args: layer(*args), jit_compile=True)
    np.testing.assert_allclose(dynamic(*inputs).numpy(), eager, atol=1e-4)
    np.testing.assert_allclose(compiled(*inputs).numpy(), eager, atol=1e-4)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("case", ["spatial", "temporal", "pairs"])
def test_mixed_precision_is_close_to_float32(case, policy):
    inputs, make_layer = layer_cases()[case]
    full = make_layer()
    full(*inputs)
    randomise_weights(full, 24, 0.3)
    want = full(*inputs).numpy()
    keras.mixed_precision.set_global_policy(policy)
    mixed = make_layer()
    mixed(*inputs)
    mixed.set_weights(full.get_weights())
    got = mixed(*inputs)
    assert got.dtype == policy.split("_")[1]
    assert all(weight.dtype == "float32" for weight in mixed.weights)
    got = tf.cast(got, tf.float32).numpy()
    assert np.isfinite(got).all()
    assert np.abs(got - want).mean() < 0.03 * max(np.abs(want).mean(), 1e-3)


def test_mirrored_strategy_matches_one_device():
    inputs, _ = layer_cases()["pairs"]
    # A 0/1 float mask: Keras' fit under MirroredStrategy sums the first batch
    # across replicas to build the model, which fails for a bool tensor.
    inputs[3] = inputs[3].astype("float32")

    def build_model():
        symbolic = [keras.Input(np.shape(a)[1:]) for a in inputs]
        similarity = PairSimilarity(hidden_units=(8,))(*symbolic)
        logits = keras.layers.Dense(2)(keras.layers.Flatten()(similarity))
        return keras.Model(symbolic, logits)

    assert_mirrored_fit_matches_one_device(build_model, tuple(inputs), np.arange(2) % 2)


@pytest.mark.parametrize("shapes, message", [
    (((2, 4, 8), (2, 5, 8), (2, 4, 6, 4), (2, 4, 6), (2, 5, 3)), "`detection_boxes` must have"),
    (((2, 4, 8), (2, 5, 8), (2, 4, 6, 4), (2, 4, 5), (2, 5, 4)),
     "`track_mask` must have the same frames size as `track_boxes`"),
    (((2, 4, 8), (2, 5, 8), (2, 3, 6, 4), (2, 4, 6), (2, 5, 4)),
     "`track_boxes` must have the same tracklets size"),
    (((2, 4, 8), (2, 5, 7), (2, 4, 6, 4), (2, 4, 6), (2, 5, 4)),
     "`detection_features` must have the same channels size"),
    (((2, 4, 8), (2, 5, 8), (2, 4, 6, 4), (2, 4, 6), (2, 4, 4)),
     "`detection_boxes` must have the same detections size"),
    (((4, 8), (2, 5, 8), (2, 4, 6, 4), (2, 4, 6), (2, 5, 4)), "`track_features` must be a rank-3"),
])
def test_bad_pair_inputs_raise_value_error(shapes, message):
    arrays = [np.zeros(shape, "float32") for shape in shapes]
    arrays[3] = arrays[3] > 0
    with pytest.raises(ValueError, match=message):
        PairSimilarity()(*arrays)


def test_calls_after_build_are_checked_too():
    inputs = pair_inputs(dtype="float32")
    layer = built_pairs(inputs)
    narrow = [inputs[0][..., :4], inputs[1][..., :4]] + inputs[2:]
    with pytest.raises(ValueError, match="`track_features` must have 8 channels"):
        layer(*narrow)
    temporal = TemporalRelation()
    temporal(np.zeros((2, 5, 8), "float32"), np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="`features` must have 8 channels"):
        temporal(np.zeros((2, 5, 4), "float32"), np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="`frame_mask` must match"):
        temporal(np.zeros((2, 5, 8), "float32"), np.ones((2, 4), bool))


@pytest.mark.parametrize("arguments, name", [
    ({"relation_dim": 0}, "relation_dim"), ({"hidden_units": 8}, "hidden_units"),
    ({"hidden_units": (8, -1)}, "hidden_units"), ({"box_format": "xywh"}, "box_format"),
])
def test_bad_arguments_raise_value_error(arguments, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        PairSimilarity(**arguments)


def test_empty_frames_and_no_tracklets_give_empty_outputs():
    spatial = SpatialRelation(num_heads=2)
    assert spatial(np.zeros((1, 0, 8), "float32"), np.zeros((1, 0, 4), "float32")).shape == (1, 0, 8)
    pairs = PairSimilarity()
    tracks = pair_inputs(batch=1, tracks=0, detections=3, dtype="float32")
    assert pairs(*tracks).shape == (1, 0, 3)
    none = pair_inputs(batch=1, tracks=2, detections=0, dtype="float32")
    assert pairs(*none).shape == (1, 2, 0)
