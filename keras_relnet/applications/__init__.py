"""Keras-Application-style models of keras-relnet."""

from keras_relnet.applications.lrnet import (
    LRNet,
    LRNet26,
    LRNet50,
    LRNet101,
    preprocess_input,
)
