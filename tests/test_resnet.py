"""Context ResNets: Keras' ResNet architecture, exact context parameter deltas,
presets, placement, and the same context options on LR-Net."""

import keras
import numpy as np
import pytest

from keras_relnet.applications import (
    GCResNet50, LRNet26, LRNet50, NLResNet50, ResNet, ResNet26, ResNet50, ResNet101, SEResNet50)
from keras_relnet.layers import GlobalContext, NonLocal2D, SimplifiedNonLocal2D, SqueezeExcitation

RESNET50_PARAMS = 25_636_712


def test_resnet50_has_the_parameter_count_of_keras_resnet50():
    assert ResNet50().count_params() == RESNET50_PARAMS
    assert abs(ResNet26().count_params() / 16.0e6 - 1) < 0.01
    assert ResNet101().count_params() == keras.applications.ResNet101(weights=None).count_params()


def test_keras_resnet50_weights_give_the_same_outputs():
    reference = keras.applications.ResNet50(weights=None)
    rng = np.random.default_rng(0)
    for weight in reference.weights:  # random BN statistics too, not just kernels
        values = rng.normal(size=weight.shape) * 0.05
        weight.assign(np.abs(values) + 0.5 if "variance" in weight.path else values)
    ours = ResNet50()
    transferred = 0
    for layer in reference.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
            transferred += 1
    assert transferred == 107
    images = rng.normal(size=(2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(ours(images)), np.asarray(reference(images)),
                               atol=1e-6)


@pytest.mark.parametrize("build, delta", [
    (GCResNet50, 2_521_741),
    (lambda: ResNet50(context_block="gc", context_ratio=1 / 4), 10_000_909),
    (NLResNet50, 2_099_712),
])
def test_exact_context_parameter_deltas(build, delta):
    assert build().count_params() - RESNET50_PARAMS == delta


def test_presets_place_their_blocks_where_the_papers_do():
    def stages(model, layer_type):
        return sorted({l.name[4] for l in model.layers if isinstance(l, layer_type)})

    gc = GCResNet50(include_top=False)
    assert stages(gc, GlobalContext) == ["3", "4", "5"]
    assert sum(isinstance(l, GlobalContext) for l in gc.layers) == 4 + 6 + 3
    assert stages(SEResNet50(include_top=False), SqueezeExcitation) == ["2", "3", "4", "5"]
    nl = NLResNet50(include_top=False)
    names = [l.name for l in nl.layers]
    assert [l.name for l in nl.layers if isinstance(l, NonLocal2D)] == ["conv4_nonlocal"]
    assert names.index("conv4_block5_out") < names.index("conv4_nonlocal") < names.index(
        "conv4_block6_1_conv")
    snl = ResNet26(context_block="snl", context_stages=("c4",), include_top=False)
    assert stages(snl, SimplifiedNonLocal2D) == ["4"]


def test_add_fusion_context_blocks_leave_the_network_unchanged_at_initialisation():
    images = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32")
    base = ResNet26(input_shape=(64, 64, 3), classes=5)
    for block in ("gc", "snl", "nl"):
        model = ResNet26(input_shape=(64, 64, 3), classes=5, context_block=block)
        for layer in base.layers:
            if layer.weights:
                model.get_layer(layer.name).set_weights(layer.get_weights())
        np.testing.assert_allclose(np.asarray(model(images)), np.asarray(base(images)),
                                   atol=1e-6, err_msg=block)


def test_lrnet_takes_the_same_context_options():
    assert LRNet50(context_block="gc").count_params() - LRNet50().count_params() == 2_521_741
    model = LRNet26(context_block="se", context_stages=(2, 5), width_multiplier=0.25,
                    input_shape=(32, 32, 3), classes=3)
    assert sorted({l.name[5] for l in model.layers if isinstance(l, SqueezeExcitation)}) == [
        "2", "5"]


def test_context_resnet_trains_with_unknown_input_size_and_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    backbone = ResNet((1, 1, 1, 1), context_block="gc", include_top=False, pooling="avg")
    assert backbone.input_shape == (None, None, None, 3)
    outputs = keras.layers.Dense(2, dtype="float32")(backbone.output)
    model = keras.Model(backbone.input, outputs)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    images = np.random.default_rng(2).normal(size=(4, 48, 40, 3)).astype("float32")
    history = model.fit(images, np.arange(4) % 2, epochs=1, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_keras_round_trip_of_a_context_resnet(tmp_path):
    model = ResNet((1, 1, 1, 1), context_block="gc", input_shape=(32, 32, 3), classes=4)
    images = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "gc.keras")
    restored = keras.models.load_model(tmp_path / "gc.keras")
    np.testing.assert_array_equal(np.asarray(restored(images)), np.asarray(model(images)))


@pytest.mark.parametrize("options, message", [
    (dict(context_block="cbam"), "`context_block` must be one of .*received 'cbam'"),
    (dict(context_block="gc", context_stages=(1, 3)), "`context_stages` must be a non-empty"),
    (dict(context_block="gc", context_stages=()), "`context_stages` must be a non-empty"),
    (dict(context_block="gc", context_stages=("c6",)), "`context_stages` must be a non-empty"),
    (dict(context_block="se", context_ratio=0), "`context_ratio` must be a positive number"),
    (dict(context_block="gc", context_ratio=1 / 1024), r"`ratio` .* < 1 channels"),
    (dict(weights="imagenet", classes=10), "needs the 1000 ImageNet classes"),
    (dict(weights="missing.h5"), "`weights` must be None"),
])
def test_bad_options_raise_value_error(options, message):
    with pytest.raises(ValueError, match=message):
        ResNet50(**options)


@pytest.fixture
def keras_imagenet_file(tmp_path, monkeypatch):
    """Keras' ImageNet weights download answered by a local file: a Keras
    ResNet-50 with random weights (random BN statistics too), saved."""
    from keras.src.utils import file_utils

    reference = keras.applications.ResNet50(weights=None)
    rng = np.random.default_rng(3)
    for weight in reference.weights:
        values = rng.normal(size=weight.shape) * 0.05
        weight.assign(np.abs(values) + 0.5 if "variance" in weight.path else values)
    path = tmp_path / "resnet50.weights.h5"
    reference.save_weights(path)
    requested = []

    def local_file(fname, *args, **kwargs):
        requested.append(fname)
        return str(path)

    monkeypatch.setattr(file_utils, "get_file", local_file)
    return reference, requested


def test_imagenet_weights_are_keras_weights_and_context_blocks_start_as_identity(
        keras_imagenet_file):
    reference, requested = keras_imagenet_file
    images = np.random.default_rng(4).normal(size=(2, 224, 224, 3)).astype("float32")
    want = np.asarray(reference(images))
    for build in (ResNet50, GCResNet50, NLResNet50):
        model = build(weights="imagenet")
        np.testing.assert_allclose(np.asarray(model(images)), want, atol=1e-5,
                                   err_msg=model.name)
    assert requested == ["resnet50_weights_tf_dim_ordering_tf_kernels.h5"] * 3


def test_imagenet_weights_are_refused_where_there_are_none():
    with pytest.raises(ValueError, match=r"ResNet-50 and ResNet-101 .*stage depths "
                                         r"\(2, 2, 2, 2\)"):
        ResNet26(weights="imagenet")


def test_imagenet_weights_offline_say_where_keras_looks_for_them(monkeypatch):
    from keras.src.utils import file_utils

    def offline(fname, origin=None, *args, **kwargs):  # what get_file raises without a network
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure "
                        "in name resolution")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError, match=r"needs Keras' ResNet50 ImageNet weights.*"
                                           r"~/.keras/models.*URL fetch failure.*Offline, copy"):
        GCResNet50(weights="imagenet")
