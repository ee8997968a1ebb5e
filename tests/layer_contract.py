"""The Keras contract every keras-relnet layer meets, as reusable checks."""

import keras
import numpy as np
import tensorflow as tf


def randomise_weights(layer, seed=0, scale=0.5):
    """Replaces every weight with N(0, scale) values (init often hides bugs)."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape) * scale)


def central_difference(function, variable, delta=1e-6):
    """d function() / d variable by central differences, entry by entry."""
    flat = variable.numpy().reshape(-1)
    gradient = np.zeros_like(flat)
    for index in range(flat.size):
        for sign in (1, -1):
            shifted = flat.copy()
            shifted[index] += sign * delta
            variable.assign(shifted.reshape(variable.shape))
            gradient[index] += sign * function().numpy() / (2 * delta)
    variable.assign(flat.reshape(variable.shape))
    return gradient.reshape(variable.shape)


def assert_loss_gradients_match_finite_differences(loss, variables, atol=1e-6, rtol=1e-6):
    """The tape gradients of `loss()` equal its central differences, per variable.

    Args:
        loss: a float64 scalar function of `variables` (no arguments).
        variables: the `tf.Variable`s to differentiate against.
        atol, rtol: the tolerances of the comparison.

    Returns:
        The tape gradients.
    """
    with tf.GradientTape() as tape:
        value = loss()
    gradients = tape.gradient(value, variables)
    for variable, gradient in zip(variables, gradients):
        assert gradient is not None, variable.name
        np.testing.assert_allclose(gradient.numpy(), central_difference(loss, variable),
                                   atol=atol, rtol=rtol, err_msg=variable.name)
    return gradients


def assert_gradients_match_finite_differences(layer, input_shape, seed=0, tolerance=1e-6):
    """Input and every trainable weight, float64 `layer`, random weights."""
    inputs = tf.Variable(np.random.default_rng(seed).normal(size=input_shape))
    layer.build(inputs.shape)
    randomise_weights(layer, seed + 1)
    upstream = tf.constant(np.random.default_rng(seed + 2).normal(size=layer(inputs).shape))
    loss = tf.function(lambda: tf.reduce_sum(layer(inputs) * upstream))
    assert_loss_gradients_match_finite_differences(loss, [inputs] + layer.trainable_variables,
                                                   tolerance, tolerance)


def assert_keras_round_trip(make_layer, input_shape, path):
    """`.keras` save -> load gives identical outputs; from_config rebuilds."""
    inputs = keras.Input(input_shape[1:])
    layer = make_layer()
    model = keras.Model(inputs, layer(inputs))
    randomise_weights(layer)
    images = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.layers[-1]) is type(layer)
    np.testing.assert_array_equal(np.asarray(restored(images)), np.asarray(model(images)))
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def assert_unknown_spatial_dims_under_tf_function(make_layer, channels):
    inputs = keras.Input((None, None, channels))
    model = keras.Model(inputs, make_layer()(inputs))
    randomise_weights(model.layers[-1])
    predict = tf.function(model, reduce_retracing=True)
    for height, width in [(5, 7), (8, 6)]:
        images = np.random.default_rng(height).normal(size=(2, height, width, channels))
        images = images.astype("float32")
        eager = np.asarray(model(images))
        assert eager.shape[1:3] == (height, width)
        np.testing.assert_allclose(predict(images).numpy(), eager, atol=1e-5)


def assert_mixed_precision_close_to_float32(make_layer, input_shape, policy, seed=0):
    """Finite outputs in the policy's dtype, close to the float32 layer."""
    images = np.random.default_rng(seed).normal(size=input_shape).astype("float32") * 8
    full = make_layer()
    full.build(input_shape)
    randomise_weights(full, seed + 1)
    keras.mixed_precision.set_global_policy(policy)
    mixed = make_layer()
    mixed.build(input_shape)
    mixed.set_weights(full.get_weights())
    output = mixed(images)
    assert output.dtype == policy.split("_")[1]
    got = tf.cast(output, tf.float32).numpy()
    assert np.isfinite(got).all()
    want = np.asarray(full(images))
    assert np.abs(got - want).mean() < 0.05 * np.abs(want).mean()


def assert_mirrored_matches_one_device(make_layer, input_shape):
    """Two epochs of SGD on two logical CPUs end with one device's weights."""
    def build_model():
        inputs = keras.Input(input_shape[1:])
        features = make_layer()(inputs)
        outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(features))
        return keras.Model(inputs, outputs)

    images = np.random.default_rng(1).normal(size=input_shape).astype("float32")
    assert_mirrored_fit_matches_one_device(build_model, images, np.arange(input_shape[0]) % 2)


def assert_mirrored_fit_matches_one_device(build_model, inputs, labels):
    """`build_model()` (2 logits) fit for two epochs on two logical CPUs and
    on one device ends with the same weights."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2

    def trained_weights(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = build_model()
            model.compile(keras.optimizers.SGD(0.1),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(inputs, labels, batch_size=len(labels), epochs=2, shuffle=False, verbose=0)
        return model.get_weights()

    # ReductionToOneDevice: collective ops would clash with the keys of an
    # earlier MirroredStrategy in the same test process.
    mirrored = trained_weights(tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice()))
    single = trained_weights(tf.distribute.OneDeviceStrategy(devices[0]))
    for a, b in zip(mirrored, single):
        np.testing.assert_allclose(a, b, atol=1e-5)
