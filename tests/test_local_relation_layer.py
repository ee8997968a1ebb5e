"""The LocalRelation2D layer: the NumPy spec, gradients of every weight, and
the Keras contract (serialization, dynamic shapes, tf.function, XLA, mixed
precision, distribution, argument errors)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet import ops
from keras_relnet.layers import LocalRelation2D
from layer_contract import (
    assert_gradients_match_finite_differences,
    assert_mirrored_matches_one_device,
    randomise_weights,
)
from numpy_local_relation import numpy_local_relation_2d

GRID = list(itertools.product([1, 2], [3, 5, 7], ops.COMPOSABILITIES, [True, False]))


def numpy_layer_output(layer, inputs):
    weights = layer.family_weights
    value_kernel = weights.value_kernel.numpy() if layer.value_projection else None
    geometry = [w.numpy() for w in weights.geometry]
    return numpy_local_relation_2d(
        inputs, weights.query_kernel.numpy(), weights.key_kernel.numpy(), value_kernel,
        geometry, layer.kernel_size, layer.strides, layer.dilation_rate,
        layer.composability, layer.scale)


@pytest.mark.parametrize("strides, kernel_size, composability, value_projection", GRID)
def test_layer_matches_numpy_spec(strides, kernel_size, composability, value_projection):
    height, width = (7, 6) if kernel_size != 5 else (6, 9)
    inputs = np.random.default_rng(kernel_size).normal(size=(2, height, width, 8)).astype("float32")
    layer = LocalRelation2D(kernel_size, channels_per_group=4, strides=strides,
                            composability=composability, value_projection=value_projection,
                            scale=0.9, implementation="reference")
    layer.build(inputs.shape)
    randomise_weights(layer)
    np.testing.assert_allclose(layer(inputs).numpy(), numpy_layer_output(layer, inputs),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("strides, composability", [(1, "squared_difference"), (2, "dot"),
                                                    (2, "abs_difference")])
def test_gradients_of_input_and_every_weight_match_finite_differences(strides, composability):
    layer = LocalRelation2D(3, channels_per_group=2, strides=strides, composability=composability,
                            geometry_hidden_units=3, dtype="float64")
    assert_gradients_match_finite_differences(layer, (1, 5, 4, 4), seed=1)
    assert len(layer.trainable_variables) == 7


@pytest.mark.parametrize("strides", [1, 2])
def test_xla_layer_equals_reference_forward_and_gradients(strides):
    inputs = tf.constant(np.random.default_rng(4).normal(size=(2, 9, 8, 16)), tf.float32)
    results = []
    for implementation in ("reference", "xla"):
        layer = LocalRelation2D(5, channels_per_group=4, strides=strides,
                                implementation=implementation)
        layer.build(inputs.shape)
        randomise_weights(layer, seed=5)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            output = layer(inputs)
            loss = tf.reduce_sum(output * tf.sin(output))
        results.append([output] + tape.gradient(loss, [inputs] + layer.trainable_variables))
    # Weight gradients sum ~150 float32 terms of magnitude ~50, and some of
    # those sums cancel to ~1e-5: compare each against the scale of the terms
    # (the largest weight gradient), where summation order cannot matter. The
    # output and the input gradient are compared at their own scale.
    weight_scale = max(np.abs(gradient.numpy()).max() for gradient in results[0][2:])
    for index, (reference, xla) in enumerate(zip(*results)):
        own = np.abs(reference.numpy()).max()
        scale = max(1.0, own if index < 2 else weight_scale)
        np.testing.assert_allclose(xla.numpy(), reference.numpy(), atol=1e-5 * scale, rtol=0)


def small_model(**layer_options):
    inputs = keras.Input((None, None, 16))
    outputs = LocalRelation2D(5, channels_per_group=4, name="relation", **layer_options)(inputs)
    return keras.Model(inputs, outputs)


def test_keras_save_and_load_give_identical_outputs(tmp_path):
    model = small_model(strides=2, composability="dot", scale=0.5,
                        kernel_regularizer=keras.regularizers.L2(1e-4))
    randomise_weights(model.get_layer("relation"))
    inputs = np.random.default_rng(6).normal(size=(2, 11, 10, 16)).astype("float32")
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(restored.get_layer("relation"), LocalRelation2D)
    np.testing.assert_array_equal(np.asarray(restored(inputs)), np.asarray(model(inputs)))


def test_from_config_rebuilds_the_same_layer():
    layer = LocalRelation2D(3, channels_per_group=2, strides=2, dilation_rate=2,
                            composability="abs_difference", value_projection=False,
                            geometry_hidden_units=5, scale=2.0, implementation="xla",
                            name="lr")
    inputs = np.random.default_rng(7).normal(size=(1, 8, 8, 6)).astype("float32")
    layer(inputs)
    clone = LocalRelation2D.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    clone.build(inputs.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(clone(inputs).numpy(), layer(inputs).numpy())


def test_unknown_height_and_width_and_tf_function():
    model = small_model(strides=2)
    predict = tf.function(model, reduce_retracing=True)
    for height, width in [(7, 9), (12, 5)]:
        inputs = np.random.default_rng(height).normal(size=(1, height, width, 16)).astype("float32")
        eager = np.asarray(model(inputs))
        assert eager.shape == (1, -(-height // 2), -(-width // 2), 16)
        np.testing.assert_allclose(predict(inputs).numpy(), eager, atol=1e-6)
    assert model.output.shape == (None, None, None, 16)
    assert model.get_layer("relation").compute_output_shape((None, 7, None, 16)) == (
        None, 4, None, 16)


@pytest.mark.parametrize("implementation", ["reference", "xla"])
def test_trains_inside_an_xla_compiled_model(implementation):
    inputs = keras.Input((8, 8, 8))
    features = LocalRelation2D(3, channels_per_group=4, implementation=implementation)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    images = np.random.default_rng(8).normal(size=(8, 8, 8, 8)).astype("float32")
    history = model.fit(images, np.arange(8) % 2, epochs=2, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("policy, dtype", [("mixed_float16", "float16"),
                                           ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_outputs_are_finite_and_close_to_float32(policy, dtype):
    inputs = np.random.default_rng(9).normal(size=(2, 8, 7, 16)).astype("float32") * 30
    full = LocalRelation2D(5, channels_per_group=4)
    full.build(inputs.shape)
    randomise_weights(full, seed=10)
    keras.mixed_precision.set_global_policy(policy)
    mixed = LocalRelation2D(5, channels_per_group=4)
    mixed.build(inputs.shape)
    mixed.set_weights(full.get_weights())
    output = mixed(inputs)
    assert output.dtype == dtype and mixed.family_weights.query_kernel.dtype == "float32"
    assert np.isfinite(tf.cast(output, tf.float32).numpy()).all()
    # Logits reach ~1e5 here: a float16 softmax would overflow to NaN. The
    # softmax is nearly an argmax at that scale, so the half-precision inputs
    # and projections move the result by a few times their rounding step
    # (measured: 8 and 7.5 steps for float16 and bfloat16, with either the
    # kernel or the reference).
    want = full(inputs).numpy()
    got = tf.cast(output, tf.float32).numpy()
    rounding_step = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    assert np.abs(got - want).mean() < 16 * rounding_step * np.abs(want).mean()


def test_mirrored_strategy_on_two_logical_cpus_matches_one_device():
    assert_mirrored_matches_one_device(lambda: LocalRelation2D(3, channels_per_group=4),
                                       (8, 6, 6, 8))


@pytest.mark.parametrize("options, message", [
    (dict(kernel_size=4), "`kernel_size` must be an odd positive integer.*received 4"),
    (dict(kernel_size=-3), "`kernel_size` must be an odd positive integer.*received -3"),
    (dict(kernel_size=0), "`kernel_size` must be an odd positive integer.*received 0"),
    (dict(strides=3), r"`strides` must be one of \[1, 2\]; received 3"),
    (dict(channels_per_group=0), "`channels_per_group` must be a positive integer"),
    (dict(composability="cosine"), "`composability` must be one of .*received 'cosine'"),
    (dict(implementation="cuda"), "`implementation` must be one of .*received 'cuda'"),
    (dict(dilation_rate=1.5), "`dilation_rate` must be a positive integer; received 1.5"),
    # A float or a bool is not an int option, and a non-finite scale makes every output NaN.
    (dict(strides=1.0), r"`strides` must be one of \[1, 2\]; received 1.0"),
    (dict(strides=True), r"`strides` must be one of \[1, 2\]; received True"),
    (dict(kernel_size=True), "`kernel_size` must be an odd positive integer.*received True"),
    (dict(scale=float("nan")), "`scale` must be a finite number; received nan"),
    (dict(scale=float("inf")), "`scale` must be a finite number; received inf"),
    (dict(scale="1"), "`scale` must be a finite number; received '1'"),
])
def test_bad_constructor_arguments_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        LocalRelation2D(**options)


@pytest.mark.parametrize("shape, message", [
    ((2, 8, 8, 12), r"channels \(12\) must be divisible by `channels_per_group` \(8\); "
                    r"received shape \(2, 8, 8, 12\)"),
    ((2, 8, 16), r"`inputs` must be a rank-4 tensor .*received shape \(2, 8, 16\)"),
    ((2, 8, 8, None), "known channel dimension; received shape"),
])
def test_bad_input_shapes_raise_value_error(shape, message):
    with pytest.raises(ValueError, match=message):
        LocalRelation2D(channels_per_group=8).build(shape)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "bool"])
def test_integer_inputs_are_one_clear_error(dtype):
    # Once a raw Conv2D dtype error from deep inside.
    from keras_relnet.layers import GlobalContext

    for layer in (LocalRelation2D(kernel_size=3, channels_per_group=8), GlobalContext()):
        with pytest.raises(ValueError, match=f"`inputs` of {type(layer).__name__} must be "
                                             f"floating point; received {dtype}"):
            layer(np.zeros((1, 8, 8, 16), dtype))
