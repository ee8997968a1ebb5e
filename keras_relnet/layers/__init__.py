"""Keras 3 layers of keras-relnet."""

from keras_relnet.layers.local_relation import LocalRelation2D
