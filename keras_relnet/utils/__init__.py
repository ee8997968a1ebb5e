"""Model-level utilities."""

from keras_relnet.utils.flops import count_flops
