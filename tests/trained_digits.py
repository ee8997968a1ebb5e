"""A small relation network trained on scikit-learn's bundled digits, for
tests that need a model whose predictions mean something (quantisation)."""

import functools

import keras
import numpy as np

from keras_relnet.layers import GlobalContext, LocalRelation2D, SqueezeExcitation


@functools.lru_cache(maxsize=1)
def trained_digits_model(epochs=8, seed=0):
    """`(model, (x_train, y_train), (x_test, y_test))`: conv stem, two local
    relation layers, GC and SE, trained on 16x16 digits (pixels in [0, 16])."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.kron(digits.images, np.ones((2, 2)))[..., None].astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, stratify=digits.target, random_state=seed)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Rescaling(1 / 8, offset=-1)(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same")(x)
    for strides in (1, 2):
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
        x = LocalRelation2D(kernel_size=5, strides=strides, channels_per_group=8)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9)(x))
    x = SqueezeExcitation(ratio=1 / 4)(GlobalContext(ratio=1 / 4)(x))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    return model, (x_train, y_train), (x_test, y_test)
