"""Attention maps of context blocks on a real photo, and their figure."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_sample_image

from keras_relnet.applications import ResNet26, preprocess_input
from keras_relnet.visualize import context_attention, plot_attention


@pytest.fixture(scope="module")
def photo():
    return tf.image.resize(load_sample_image("china.jpg"), (96, 128)).numpy()


def test_gc_block_gives_one_normalised_map(photo):
    model = ResNet26(context_block="gc", input_shape=(96, 128, 3), classes=3)
    maps = context_attention(model, preprocess_input(photo.copy()))
    assert maps.shape == (1, 3, 4)  # the c5 feature grid of a 96x128 image
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), [1.0], rtol=1e-5)


def test_non_local_block_gives_one_map_per_query_pixel(photo, tmp_path):
    model = ResNet26(context_block="nl", input_shape=(96, 128, 3), classes=3)
    queries = ((0.2, 0.2), (0.8, 0.7))
    maps = context_attention(model, preprocess_input(photo.copy()), query_points=queries)
    assert maps.shape == (2, 6, 8)  # the c4 grid
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), [1.0, 1.0], rtol=1e-5)
    path = plot_attention(photo, maps, str(tmp_path / "nl.png"), query_points=queries,
                          titles=["query 1", "query 2"])
    with open(path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_requests_raise_value_error(photo):
    plain = ResNet26(input_shape=(96, 128, 3), classes=3)
    with pytest.raises(ValueError, match="has no GlobalContext"):
        context_attention(plain, photo)
    with pytest.raises(ValueError, match="`layer_name` must name a GlobalContext"):
        context_attention(plain, photo, layer_name="conv1_conv")
    gc = ResNet26(context_block="gc", input_shape=(96, 128, 3), classes=3)
    with pytest.raises(ValueError, match="`image` must be one"):
        context_attention(gc, photo[None])


def test_object_relations_on_a_photo(photo, tmp_path):
    from keras_relnet.layers import ObjectRelation
    from keras_relnet.visualize import plot_relations, strongest_relations

    boxes = np.array([[10, 10, 40, 50], [12, 14, 42, 52], [50, 70, 90, 120], [5, 90, 30, 125]],
                     "float32")
    features = np.random.default_rng(0).normal(size=(1, 4, 32)).astype("float32")
    _, attention = ObjectRelation(num_heads=4)(features, boxes[None],
                                               return_attention_scores=True)
    pairs = strongest_relations(attention[0].numpy(), top=3)
    assert len(pairs) == 3 and all(query != key for query, key, _ in pairs)
    weights = attention[0].numpy().mean(0)
    np.fill_diagonal(weights, -1)
    assert pairs[0][2] == pytest.approx(weights.max(), abs=1e-6)
    path = plot_relations(photo, boxes, attention[0].numpy(), str(tmp_path / "relations.png"),
                          top=3, labels=["a", "b", "c", "d"])
    with open(path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="`attention`"):
        strongest_relations(np.ones((3, 4)))
    with pytest.raises(ValueError, match="`boxes`"):
        plot_relations(photo, boxes[:, :3], attention[0].numpy(), str(tmp_path / "bad.png"))


def test_relation_figures_check_their_inputs(photo, tmp_path):
    from keras_relnet.visualize import plot_relations

    boxes = np.array([[10, 10, 40, 50], [50, 70, 90, 120], [5, 90, 30, 125]], "float32")
    # All-zero attention (every key masked): the boxes, no relation drawn.
    path = plot_relations(photo, boxes, np.zeros((2, 3, 3)), str(tmp_path / "zero.png"))
    with open(path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    for attention, message in [(np.ones((4, 4)), r"`attention` must relate the 3 boxes"),
                               (np.ones((2, 2, 2)), r"`attention` must relate the 3 boxes"),
                               (np.full((3, 3), np.nan), "`attention` must be finite")]:
        with pytest.raises(ValueError, match=message):
            plot_relations(photo, boxes, attention, str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="`labels` must have one entry per box"):
        plot_relations(photo, boxes, np.eye(3), str(tmp_path / "bad.png"), labels=["a"])
    assert not (tmp_path / "bad.png").exists()


def test_attention_figures_check_inputs_and_draw_a_relative_scale(photo, tmp_path):
    for maps, message in [(np.zeros((0, 2, 2)), "at least one non-empty map"),
                          (np.zeros((2, 2)), r"`maps` must be \[num_maps, height, width\]"),
                          (np.full((1, 2, 2), np.nan), "`maps` must be finite")]:
        with pytest.raises(ValueError, match=message):
            plot_attention(photo, maps, str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="`titles` must have one entry per map"):
        plot_attention(photo, np.full((2, 2, 2), 0.25), str(tmp_path / "bad.png"), titles=["a"])
    with pytest.raises(ValueError, match=r"`image` must be one non-empty \[height, width, 3\]"):
        plot_attention(photo[..., 0], np.full((1, 2, 2), 0.25), str(tmp_path / "bad.png"))
    assert not (tmp_path / "bad.png").exists()

    import matplotlib.pyplot as plt

    # An untrained GC map (weights 0.0621-0.0629 over 16 pixels) is drawn near 1
    # on a 0..2 scale, with a colour bar that says so.
    untrained = np.linspace(0.0621, 0.0629, 16).reshape(1, 4, 4)
    untrained /= untrained.sum()
    shown = []
    original = plt.Figure.colorbar

    def recording(figure, mappable, **kwargs):
        shown.append((mappable.get_clim(), kwargs.get("label")))
        return original(figure, mappable, **kwargs)

    plt.Figure.colorbar = recording
    try:
        plot_attention(photo, untrained, str(tmp_path / "gc.png"))
    finally:
        plt.Figure.colorbar = original
    assert shown == [((0.0, 2.0), "attention x h*w (1 = uniform)")]
