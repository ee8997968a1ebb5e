"""LR-Net applications: paper sizes, the keras.applications contract, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.applications import LRNet, LRNet26, LRNet50, LRNet101
from keras_relnet.layers import LocalRelation2D
from keras_relnet.utils import count_flops

PAPER = {LRNet26: (14.7e6, 2.6e9), LRNet50: (23.3e6, 4.3e9)}


@pytest.mark.parametrize("builder", [LRNet26, LRNet50])
def test_parameters_within_2_percent_and_flops_within_10_percent_of_paper(builder):
    params, flops = PAPER[builder]
    model = builder()
    assert abs(model.count_params() / params - 1) < 0.02, model.count_params()
    assert abs(count_flops(model) / flops - 1) < 0.10, count_flops(model)


def test_lrnet101_is_lrnet50_with_23_stage4_blocks():
    deep, base = LRNet101(include_top=False), LRNet50(include_top=False)
    assert deep.get_layer("stage4_block23_2_relation") is not None
    block = sum(w.numpy().size for l in base.layers if l.name.startswith("stage4_block2_")
                for w in l.weights)
    assert deep.count_params() - base.count_params() == 17 * block


def test_no_spatial_convolution_anywhere():
    model = LRNet26()
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert convs and all(l.kernel_size == (1, 1) for l in convs)
    relations = [l for l in model.layers if isinstance(l, LocalRelation2D)]
    assert len(relations) == 1 + 8 and all(l.kernel_size == 7 for l in relations)
    assert [l.strides for l in relations if l.strides == 2] == [2] * 4  # stem + 3 stages


def test_flops_counter_agrees_with_tensorflow_profiler_on_convolutions():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.DepthwiseConv2D(5, padding="same")(x)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    graph = tf.function(model).get_concrete_function(tf.TensorSpec([1, 16, 16, 3])).graph
    profile = tf.compat.v1.profiler.profile(
        graph, options=tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
    ops = {op.name: op for op in graph.get_operations()}
    # The profiler counts 2 flops per multiply-add, plus bias additions.
    multiply_adds = sum(node.float_ops for node in profile.children
                        if ops[node.name].type in ("Conv2D", "DepthwiseConv2dNative", "MatMul"))
    assert count_flops(model) * 2 == multiply_adds


def test_flops_counter_divides_grouped_convolutions():
    # The TF profiler skips grouped Conv2D, so this one is counted by hand:
    # 8x8 positions x (1x1 window x 8/4 inputs per group) x 12 outputs.
    inputs = keras.Input((8, 8, 8))
    model = keras.Model(inputs, keras.layers.Conv2D(12, 1, groups=4)(inputs))
    assert count_flops(model) == 64 * 2 * 12


def test_application_signature_like_keras_resnet50():
    assert LRNet26().input_shape == (None, 224, 224, 3)
    features = LRNet26(include_top=False)
    assert features.input_shape == (None, None, None, 3)
    assert features.output_shape == (None, None, None, 2048)
    small = dict(width_multiplier=0.25, input_shape=(32, 32, 1))
    assert LRNet26(include_top=False, pooling="avg", **small).output_shape == (None, 512)
    assert LRNet26(include_top=False, pooling="max", **small).output_shape == (None, 512)
    logits = LRNet26(classes=7, classifier_activation=None, **small)
    assert logits.output_shape == (None, 7)
    assert logits.get_layer("predictions").activation.__name__ == "linear"
    image = keras.Input((40, 40, 3))
    built = LRNet26(input_tensor=image, include_top=False, width_multiplier=0.25)
    # 40 -> 20 (stem relation) -> 10 (pool) -> 5 -> 3 -> 2 (stages 3-5)
    assert built.inputs[0] is image and built.output_shape == (None, 2, 2, 512)


def test_weights_path_round_trip_and_bad_weights(tmp_path):
    small = dict(width_multiplier=0.25, input_shape=(32, 32, 3), classes=5)
    model = LRNet26(**small)
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    model.save_weights(tmp_path / "lrnet26.weights.h5")
    restored = LRNet26(weights=str(tmp_path / "lrnet26.weights.h5"), **small)
    np.testing.assert_array_equal(np.asarray(restored(images)), np.asarray(model(images)))
    with pytest.raises(ValueError, match="This model has no public ImageNet weights"):
        LRNet26(weights="imagenet")
    with pytest.raises(ValueError, match="`weights` must be None"):
        LRNet26(weights=str(tmp_path / "missing.weights.h5"))


@pytest.mark.parametrize("options, message", [
    (dict(include_top=False, pooling="sum"), "`pooling` must be None, 'avg' or 'max'"),
    (dict(width_multiplier=0), "`width_multiplier` must be a positive number"),
    (dict(input_shape=(32, 32)), "`input_shape` must be a rank-3"),
    (dict(channels_per_group=0), "`channels_per_group` must be a positive integer"),
    (dict(kernel_size=6), "`kernel_size` must be an odd positive integer"),
])
def test_bad_model_arguments_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        LRNet26(**options)


def test_stage_lists_of_different_lengths_raise_value_error():
    with pytest.raises(ValueError, match="must have the same length; received 2, 4 and 4"):
        LRNet((2, 2))


def test_generic_builder_makes_a_new_variant_in_one_call():
    model = LRNet((1, 1, 1, 1), stage_widths=(16, 32, 64, 128), stage_outputs=(32, 64, 128, 256),
                  stem_width=16, kernel_size=5, channels_per_group=4, input_shape=(32, 32, 3),
                  classes=3, relation_options={"composability": "dot"})
    relations = [l for l in model.layers if isinstance(l, LocalRelation2D)]
    assert {l.kernel_size for l in relations} == {5}
    assert {l.composability for l in relations} == {"dot"}
    assert model.output_shape == (None, 3)


def test_small_lrnet_fits_and_mixed_precision_head_is_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = LRNet26(width_multiplier=0.25, input_shape=(32, 32, 3), classes=4)
    assert model.get_layer("predictions").compute_dtype == "float32"
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(1).normal(size=(8, 32, 32, 3)).astype("float32")
    history = model.fit(images, np.arange(8) % 4, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.predict(images, verbose=0).dtype == np.float32


def test_preprocess_input_normalises_like_imagenet_torch_mode():
    from keras_relnet.applications import preprocess_input
    white = preprocess_input(np.full((1, 2, 2, 3), 255.0, "float32"))
    np.testing.assert_allclose(white[0, 0, 0], (1 - np.array([0.485, 0.456, 0.406]))
                               / np.array([0.229, 0.224, 0.225]), rtol=1e-5)


def test_whole_model_keras_round_trip(tmp_path):
    model = LRNet26(width_multiplier=0.25, input_shape=(32, 32, 3), classes=4)
    images = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "lrnet26.keras")
    restored = keras.models.load_model(tmp_path / "lrnet26.keras")
    np.testing.assert_array_equal(np.asarray(restored(images)), np.asarray(model(images)))
