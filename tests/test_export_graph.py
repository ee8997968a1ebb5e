"""The shape of exported local relation graphs: parity at fixed and dynamic
sizes, operators per layer, and what XNNPACK leaves outside its partitions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.applications import LRNet
from keras_relnet.export import (
    export,
    onnx_operator_counts,
    run_exported,
    tflite_custom_operators,
    tflite_delegation,
)
from keras_relnet.layers import LocalRelation2D
from keras_relnet.ops.local_relation.export_forward import export_relation
from keras_relnet.ops.local_relation.export_tiles import choose_tiling
from keras_relnet.ops.local_relation.op import local_relation_aggregation
from keras_relnet.ops.local_relation.window import Window
from tests.layer_contract import randomise_weights

FORMATS = {"saved_model": "model", "tflite": "model.tflite", "onnx": "model.onnx"}
# A fixed-size local relation layer: its q/k/v projections and ~20 operators
# of aggregation. The per-cell graph has about five operators per window cell
# (over 120 at k = 5), so the bound catches a regression to it.
OPERATORS_PER_LAYER = 40
# Left outside XNNPACK, per local relation layer: the two window gathers and
# the prior's gather (XNNPACK has no GATHER).
GATHERS_PER_LAYER = 3


def relation_model(size, strides=1, kernel_size=5, composability="squared_difference"):
    """Conv, then one local relation layer (random weights, so the prior and the
    projections matter); `size` None makes its height and width dynamic."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = LocalRelation2D(kernel_size=kernel_size, strides=strides, channels_per_group=4,
                        composability=composability)(x)
    model = keras.Model(inputs, x)
    randomise_weights(model.layers[-1], seed=3, scale=0.5)
    return model


def images(batch, size, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


@pytest.mark.parametrize("composability", ["squared_difference", "dot", "abs_difference"])
@pytest.mark.parametrize("size,channels,strides,kernel_size,dilation", [
    (13, 16, 1, 7, 1),  # several tiles, a partial last one
    (20, 32, 1, 7, 1),
    (15, 24, 2, 5, 2),  # stride 2 and dilation
    (9, 8, 1, 3, 3),
    (7, 64, 1, 7, 1),  # one tile, its window cropped to the image
    (7, 64, 2, 7, 1),
])
def test_the_tiled_forward_equals_the_reference(size, channels, strides, kernel_size, dilation,
                                                composability):
    rng = np.random.default_rng(size + channels)
    groups, out = channels // 8, -(-size // strides)
    query, key = (rng.normal(size=(2, n, n, groups)).astype("float32") for n in (out, size))
    value = rng.normal(size=(2, size, size, channels)).astype("float32")
    prior = rng.normal(size=(groups, kernel_size, kernel_size)).astype("float32")
    options = dict(strides=strides, dilation_rate=dilation, composability=composability,
                   scale=0.7)
    want = local_relation_aggregation(query, key, value, prior, implementation="reference",
                                      **options)
    window = Window(kernel_size, strides, dilation, composability, 0.7)
    got = export_relation(window)(*map(tf.constant, (query, key, value, prior)))
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_tiles_are_cropped_to_a_small_image_and_small_at_a_large_one():
    window = Window(7, 1, 1, "squared_difference", 1.0)
    assert choose_tiling(window, 7, 7, 100)[2:] == (1, 1)  # one tile: 49 positions, no band
    tiling = choose_tiling(window, 56, 56, 13)
    assert tiling.rows * tiling.cols <= 64 and tiling.tiles >= 49


@pytest.mark.parametrize("strides,composability", [(1, "squared_difference"), (2, "dot"),
                                                   (1, "abs_difference")])
def test_fixed_size_exports_match_keras(strides, composability, tmp_path):
    model = relation_model(13, strides, composability=composability)
    for format, name in FORMATS.items():
        path = export(model, tmp_path / name, format=format)
        for batch in (1, 2):
            x = images(batch, 13, seed=batch)
            np.testing.assert_allclose(run_exported(path, x), model.predict(x, verbose=0),
                                       atol=1e-4, err_msg=f"{format}, batch {batch}")


@pytest.mark.parametrize("format", ["saved_model", "tflite", "onnx"])
def test_dynamic_size_exports_match_keras_at_every_size(format, tmp_path):
    model = relation_model(None, strides=2)
    path = export(model, tmp_path / FORMATS[format], format=format)
    for size in (9, 16):
        x = images(1, size, seed=size)
        np.testing.assert_allclose(run_exported(path, x), model.predict(x, verbose=0),
                                   atol=1e-4, err_msg=f"{format}, {size}x{size}")


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_a_fixed_size_layer_has_a_bounded_operator_count(kernel_size, tmp_path):
    model = relation_model(28, kernel_size=kernel_size)
    stats = tflite_delegation(export(model, tmp_path / "model.tflite"))
    nodes = onnx_operator_counts(export(model, tmp_path / "model.onnx"))
    # The conv is one operator in each format; the rest is the relation layer.
    assert sum(stats.operators.values()) - 1 <= OPERATORS_PER_LAYER, stats.operators
    assert sum(nodes.values()) - 1 <= OPERATORS_PER_LAYER, nodes
    assert stats.partitions == 2 and set(stats.outside) == {"GATHER"}, stats


def test_a_fixed_size_lrnet_leaves_only_gathers_outside_xnnpack(tmp_path):
    model = LRNet((1, 1, 1, 1), width_multiplier=0.25, input_shape=(64, 64, 3), classes=10)
    relations = [layer for layer in model.layers if isinstance(layer, LocalRelation2D)]
    path = export(model, tmp_path / "lrnet.tflite")
    stats = tflite_delegation(path)
    assert tflite_custom_operators(path) == []
    # Stride-2 queries are strided 1x1 convolutions, so no strided slice is left.
    assert set(stats.outside) == {"GATHER"}, stats.outside
    assert stats.outside["GATHER"] <= GATHERS_PER_LAYER * len(relations), stats.outside
    # The relation arithmetic is delegated: what is outside is a few copies per layer.
    assert sum(stats.outside.values()) < 0.1 * sum(stats.operators.values()), stats
