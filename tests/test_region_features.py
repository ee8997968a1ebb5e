"""Learnable region features: RoIAlign as the bilinear special case, the learned
weights against NumPy, and the layer's Keras contract."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.layers import LearnableRegionFeatures
from keras_relnet.ops.region_features import aggregate_regions, bilinear_weights, part_centers
from tests.layer_contract import (
    assert_loss_gradients_match_finite_differences,
    randomise_weights,
)


def feature_map(height, width, channels, seed):
    return np.random.default_rng(seed).normal(size=(2, height, width, channels)).astype("float32")


def boxes_inside(image_size, count, seed):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0.15, 0.45, size=(2, count, 2)) * image_size
    size = rng.uniform(0.1, 0.4, size=(2, count, 2)) * image_size
    return np.concatenate([corner, corner + size], -1).astype("float32")


@pytest.mark.parametrize("stride, output_size", [(1, (7, 7)), (4, (7, 7)), (8, (3, 5))])
def test_bilinear_weights_reproduce_crop_and_resize(stride, output_size):
    x = feature_map(12, 10, 3, 0)
    boxes = boxes_inside(np.array([12, 10]) * stride, 4, 1)
    weights = bilinear_weights(part_centers(tf.constant(boxes), output_size), (12, 10), stride)
    got = aggregate_regions(tf.constant(x), weights, output_size)
    # crop_and_resize samples y_n * (H - 1) for normalised y_n, linearly in the crop
    # index: pick the normalised corners that hit the first and last bin centres.
    h, w = output_size
    y1, x1, y2, x2 = np.moveaxis(boxes, -1, 0)
    first_y = (y1 + 0.5 * (y2 - y1) / h) / stride - 0.5
    last_y = (y1 + (h - 0.5) * (y2 - y1) / h) / stride - 0.5
    first_x = (x1 + 0.5 * (x2 - x1) / w) / stride - 0.5
    last_x = (x1 + (w - 0.5) * (x2 - x1) / w) / stride - 0.5
    normalised = np.stack([first_y / 11, first_x / 9, last_y / 11, last_x / 9], -1)
    want = tf.image.crop_and_resize(x, normalised.reshape(-1, 4), np.repeat([0, 1], 4),
                                    output_size)
    np.testing.assert_allclose(got.numpy().reshape(want.shape), want.numpy(), atol=1e-5)


def numpy_learned_parts(x, boxes, layer):
    """Spec section 3 in NumPy: softmax over the support of G_k + A_k, then the sum."""
    appearance, box_projection, image_projection = (w.numpy() for w in layer.weights)
    stride, e = layer.feature_stride, layer.embedding_dim
    batch, height, width, channels = x.shape

    def sinusoid(values):
        freq = 1000.0 ** (np.arange(e // 2) * 2 / e)
        args = values[..., None] / freq
        return np.concatenate([np.sin(args), np.cos(args)], -1).reshape(values.shape[:-1] + (-1,))

    ys, xs = np.meshgrid((np.arange(height) + 0.5) * stride, (np.arange(width) + 0.5) * stride,
                         indexing="ij")
    pixels = np.stack([ys.ravel(), xs.ravel()], -1)
    pixel_terms = sinusoid(pixels) @ image_projection
    parts = np.zeros((batch, boxes.shape[1], box_projection.shape[0], channels))
    for b in range(batch):
        flat = x[b].reshape(-1, channels).astype(np.float64)
        for n, (y1, x1, y2, x2) in enumerate(boxes[b]):
            center = np.array([(y1 + y2) / 2, (x1 + x2) / 2])
            half = np.maximum(layer.context * np.array([y2 - y1, x2 - x1]) / 2, stride / 2)
            inside = np.all(np.abs(pixels - center) <= half, axis=-1)
            box_terms = np.einsum("e,kep->kp", sinusoid(boxes[b, n][None])[0], box_projection)
            logits = box_terms @ pixel_terms.T + (flat @ appearance).T
            weights = np.where(inside, np.exp(logits - logits[:, inside].max(1, keepdims=True)), 0)
            parts[b, n] = (weights / weights.sum(1, keepdims=True)) @ flat
    return parts.reshape((batch, boxes.shape[1]) + layer.output_size + (channels,))


@pytest.mark.parametrize("stride, context", [(1.0, 2.0), (4.0, 1.0)])
def test_learned_parts_match_numpy(stride, context):
    x = feature_map(6, 5, 3, 2)
    boxes = boxes_inside(np.array([6, 5]) * stride, 3, 3)
    layer = LearnableRegionFeatures(output_size=(2, 3), feature_stride=stride, context=context,
                                    embedding_dim=4, projection_dim=5)
    layer(x, boxes)
    randomise_weights(layer, 4, 0.5)
    np.testing.assert_allclose(layer(x, boxes).numpy(), numpy_learned_parts(x, boxes, layer),
                               atol=1e-5)


def test_xyxy_boxes_and_boxes_outside_the_image():
    x = feature_map(6, 6, 2, 5)
    boxes = boxes_inside(np.array([6, 6]), 2, 6)
    layer = LearnableRegionFeatures(output_size=2, embedding_dim=4, projection_dim=4)
    want = layer(x, boxes).numpy()
    xyxy = LearnableRegionFeatures(output_size=2, embedding_dim=4, projection_dim=4,
                                   box_format="xyxy")
    xyxy(x, boxes)
    xyxy.set_weights(layer.get_weights())
    np.testing.assert_allclose(xyxy(x, boxes[..., [1, 0, 3, 2]]).numpy(), want, atol=1e-6)
    outside = np.array([[[50.0, 50, 60, 60]]] * 2, "float32")
    np.testing.assert_array_equal(layer(x, outside).numpy(), 0.0)


def test_keras_contract(tmp_path):
    images, boxes = keras.Input((None, None, 3)), keras.Input((None, 4))
    layer = LearnableRegionFeatures(output_size=3, feature_stride=2.0, embedding_dim=4,
                                    projection_dim=4, name="region_features")
    model = keras.Model([images, boxes], layer(images, boxes))
    randomise_weights(layer, 7, 0.3)
    data = [feature_map(5, 7, 3, 8), boxes_inside(np.array([10, 14]), 3, 9)]
    model.save(tmp_path / "regions.keras")
    restored = keras.models.load_model(tmp_path / "regions.keras")
    np.testing.assert_array_equal(np.asarray(restored(data)), np.asarray(model(data)))
    xla = tf.function(lambda a, b: model([a, b]), jit_compile=True)
    np.testing.assert_allclose(xla(*data).numpy(), np.asarray(model(data)), atol=1e-5)
    assert model([feature_map(4, 4, 3, 10), data[1]]).shape == (2, 3, 3, 3, 3)
    config = layer.get_config()
    assert LearnableRegionFeatures.from_config(config).get_config() == config


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    x, boxes = feature_map(6, 6, 3, 11), boxes_inside(np.array([96, 96]), 2, 12)
    full = LearnableRegionFeatures(output_size=2, feature_stride=16.0, embedding_dim=4,
                                   projection_dim=4)
    full(x, boxes)
    randomise_weights(full, 13, 0.3)
    keras.mixed_precision.set_global_policy(policy)
    mixed = LearnableRegionFeatures(output_size=2, feature_stride=16.0, embedding_dim=4,
                                    projection_dim=4)
    mixed(x, boxes)
    mixed.set_weights(full.get_weights())
    got = mixed(x, boxes)
    assert got.dtype == policy.split("_")[1]
    want = full(x, boxes).numpy()
    assert np.abs(tf.cast(got, tf.float32).numpy() - want).mean() < 0.05 * np.abs(want).mean()


def test_gradients_match_finite_differences():
    x = tf.Variable(feature_map(4, 4, 2, 14).astype("float64"))
    boxes = boxes_inside(np.array([4, 4]), 2, 15)
    layer = LearnableRegionFeatures(output_size=2, embedding_dim=2, projection_dim=2,
                                    dtype="float64")
    layer(x, boxes)
    randomise_weights(layer, 16, 0.5)
    upstream = tf.constant(np.random.default_rng(17).normal(size=(2, 2, 2, 2, 2)))
    loss = tf.function(lambda: tf.reduce_sum(layer(x, boxes) * upstream))
    variables = [x] + layer.trainable_variables
    assert_loss_gradients_match_finite_differences(loss, variables, atol=1e-6, rtol=1e-5)


def test_bad_inputs_raise_value_error():
    layer = LearnableRegionFeatures(output_size=2)
    with pytest.raises(ValueError, match="`boxes`"):
        layer(feature_map(4, 4, 2, 0), np.zeros((2, 3, 5), "float32"))
    with pytest.raises(ValueError, match="`feature_map`"):
        LearnableRegionFeatures()(np.zeros((2, 4, 4), "float32"), np.zeros((2, 3, 4), "float32"))
    for arguments, name in [({"output_size": 0}, "output_size"),
                            ({"box_format": "cxcywh"}, "box_format"),
                            ({"context": -1.0}, "context"), ({"embedding_dim": 3}, "embedding_dim")]:
        with pytest.raises(ValueError, match=f"`{name}`"):
            LearnableRegionFeatures(**arguments)


def test_mirrored_strategy_matches_one_device():
    from tests.layer_contract import assert_mirrored_fit_matches_one_device

    def build_model():
        images, boxes = keras.Input((5, 5, 2)), keras.Input((3, 4))
        parts = LearnableRegionFeatures(output_size=2, embedding_dim=4, projection_dim=4)(
            images, boxes)
        pooled = keras.layers.Flatten()(parts)
        return keras.Model([images, boxes], keras.layers.Dense(2)(pooled))

    data = (np.concatenate([feature_map(5, 5, 2, 18)] * 2), boxes_inside(np.array([5, 5]), 3, 19))
    data = (data[0], np.concatenate([data[1]] * 2))
    assert_mirrored_fit_matches_one_device(build_model, data, np.arange(4) % 2)


def test_boxes_and_feature_map_must_agree_at_every_call():
    layer = LearnableRegionFeatures(output_size=2, embedding_dim=4, projection_dim=4)
    layer(feature_map(8, 8, 3, 0), boxes_inside(8, 5, 1))
    with pytest.raises(ValueError, match=r"`feature_map` and `boxes` must have the same batch "
                                         r"size; received shapes \(2, 8, 8, 3\) and \(1, 5, 4\)"):
        layer(feature_map(8, 8, 3, 0), boxes_inside(8, 5, 1)[:1])
    with pytest.raises(ValueError, match=r"`feature_map` must have 3 channels"):
        layer(np.zeros((2, 8, 8, 4), "float32"), boxes_inside(8, 5, 1))


def test_a_non_finite_box_gets_zero_features_and_leaves_the_others_exact():
    layer = LearnableRegionFeatures(output_size=2, embedding_dim=4, projection_dim=4)
    x, boxes = feature_map(8, 8, 3, 2), boxes_inside(8, 5, 3)
    layer(x, boxes)
    randomise_weights(layer, 4, 0.3)
    broken = boxes.copy()
    broken[1, 2, 3] = np.inf
    got, want = layer(x, broken).numpy(), layer(x, boxes).numpy()
    assert not got[1, 2].any()
    others = np.ones((2, 5), bool)
    others[1, 2] = False
    np.testing.assert_array_equal(got[others], want[others])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, broken))
    assert all(np.isfinite(g.numpy()).all()
               for g in tape.gradient(loss, layer.trainable_variables))
