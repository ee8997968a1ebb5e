"""Keras-Application-style models of keras-relnet."""

from keras_relnet.applications.lrnet import (
    LRNet,
    LRNet26,
    LRNet50,
    LRNet101,
    preprocess_input,
)
from keras_relnet.applications.resnet import (
    GCResNet50,
    NLResNet50,
    ResNet,
    ResNet26,
    ResNet50,
    ResNet101,
    SEResNet50,
)
