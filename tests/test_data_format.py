"""`data_format`: the image layers honour channels_first (the argument or Keras'
global setting); the applications and the Model Garden layers refuse it clearly."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet import layers
from keras_relnet.applications import GCResNet50, LRNet26, ResNet26
from keras_relnet.garden import layers as garden_layers
from tests.layer_contract import randomise_weights

IMAGE_LAYERS = {
    "LocalRelation2D": lambda **kw: layers.LocalRelation2D(3, 4, strides=2, **kw),
    "GlobalContext": lambda **kw: layers.GlobalContext(ratio=1 / 4, **kw),
    "SimplifiedNonLocal2D": lambda **kw: layers.SimplifiedNonLocal2D(**kw),
    "NonLocal2D": lambda **kw: layers.NonLocal2D(sub_sample=True, **kw),
    "SqueezeExcitation": lambda **kw: layers.SqueezeExcitation(ratio=1 / 4, **kw),
}


@pytest.fixture
def channels_first():
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format("channels_last")


@pytest.mark.parametrize("name", sorted(IMAGE_LAYERS))
def test_channels_first_layers_equal_channels_last_transposed(name):
    nhwc = np.random.default_rng(0).normal(size=(2, 7, 6, 16)).astype("float32")
    nchw = nhwc.transpose(0, 3, 1, 2)
    last = IMAGE_LAYERS[name](data_format="channels_last")
    first = IMAGE_LAYERS[name](data_format="channels_first")
    last(nhwc), first(nchw)
    randomise_weights(last, seed=1, scale=0.3)
    first.set_weights(last.get_weights())
    got, want = first(nchw).numpy(), last(nhwc).numpy()
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), atol=1e-5)
    assert first.compute_output_shape(nchw.shape) == got.shape
    assert type(first).from_config(first.get_config()).data_format == "channels_first"


def test_layers_follow_the_global_data_format(channels_first):
    layer = layers.LocalRelation2D(3, 4)
    assert layer.data_format == "channels_first"
    model = keras.Sequential([keras.Input((8, 5, 5)), layer, layers.GlobalContext(ratio=0.5)])
    assert model.output_shape == (None, 8, 5, 5)
    with pytest.raises(ValueError, match=r"channels \(5\) must be divisible"):
        layers.LocalRelation2D(3, 4).build((None, 5, 8, 8))


def test_bad_data_format_is_refused():
    with pytest.raises(ValueError, match=r"`data_format` must be one of \['channels_last', "
                                         r"'channels_first'\]; received 'NCHW'"):
        layers.GlobalContext(data_format="NCHW")


@pytest.mark.parametrize("application", [ResNet26, LRNet26, GCResNet50])
def test_applications_refuse_channels_first(channels_first, application):
    with pytest.raises(ValueError, match=r"keras-relnet models are built channels_last.*"
                                         r"set_image_data_format\('channels_last'\)"):
        application(input_shape=(3, 64, 64), classes=2)


def test_garden_layers_are_channels_last_even_when_keras_is_not(channels_first):
    layer = garden_layers.GlobalContext(ratio=1 / 4)
    assert layer.get_config()["data_format"] == "channels_last"
    assert layer(tf.ones([1, 5, 5, 8])).shape == (1, 5, 5, 8)
    with pytest.raises(ValueError, match="Model Garden layers take NHWC inputs"):
        garden_layers.LocalRelation2D(kernel_size=3, channels_per_group=4,
                                      data_format="channels_first")
