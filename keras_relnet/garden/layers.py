"""tf_keras (Keras 2) fronts of the relation layers, for TF Model Garden.

Model Garden is tf_keras: a Keras 3 layer inside it is silently untracked (no
trainable variables, not checkpointed). These layers create their weights in
tf_keras with the same functions, names and order as the Keras 3 layers and
call the same ops, so `garden_layer.set_weights(keras3_layer.get_weights())`
moves weights both ways and the outputs agree.

Arguments are those of the Keras 3 layer of the same name, validated by it;
`kernel_regularizer` (where there is one) takes a tf_keras regulariser.
"""

import functools

import tensorflow as tf
import tf_keras

from keras_relnet import layers as keras3_layers
from keras_relnet.layers.global_context import global_context_weights
from keras_relnet.layers.local_relation import local_relation_weights
from keras_relnet.layers.non_local import non_local_weights
from keras_relnet.layers.squeeze_excitation import squeeze_excitation_weights
from keras_relnet.ops.context import global_context, non_local_2d, squeeze_excitation
from keras_relnet.ops.local_relation import local_relation_2d

_BASE_ARGUMENTS = ("name", "trainable", "dtype", "autocast", "dynamic", "input_shape",
                   "batch_input_shape", "input_dim")
_PACKAGE = "keras_relnet_garden"


class _OpsLayer(tf_keras.layers.Layer):
    """A tf_keras layer whose options are those of `keras3_class`, checked by it."""

    keras3_class = None

    def __init__(self, kernel_regularizer=None, **kwargs):
        base = {key: kwargs.pop(key) for key in list(kwargs) if key in _BASE_ARGUMENTS}
        super().__init__(**base)
        config = self.keras3_class(**kwargs).get_config()  # validates the options
        for key in ("name", "trainable", "dtype", "kernel_regularizer"):
            config.pop(key, None)
        self.options = config
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)

    @functools.cached_property  # stored outside tf_keras' attribute tracking
    def spec(self):
        """The equivalent Keras 3 layer (unbuilt): the options, normalised."""
        return self.keras3_class(**self.options)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(self.spec.compute_output_shape(tuple(input_shape)))

    def get_config(self):
        return {**super().get_config(), **self.options,
                "kernel_regularizer": tf_keras.regularizers.serialize(self.kernel_regularizer)}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalRelation2D(_OpsLayer):
    """tf_keras `LocalRelation2D` (see `keras_relnet.layers.LocalRelation2D`).

    Example:
    >>> LocalRelation2D(kernel_size=3, channels_per_group=4)(tf.ones((1, 6, 6, 8))).shape
    TensorShape([1, 6, 6, 8])
    """

    keras3_class = keras3_layers.LocalRelation2D

    def build(self, input_shape):
        spec = self.spec
        channels = spec._checked_channels(tuple(input_shape))
        self.query_kernel, self.key_kernel, self.value_kernel, self.geometry = (
            local_relation_weights(
                self.add_weight, channels, spec.channels_per_group, spec.value_projection,
                spec.geometry_hidden_units, spec.kernel_initializer, self.kernel_regularizer,
                spec.geometry_initializer))
        super().build(input_shape)

    def call(self, inputs):
        spec = self.spec
        return local_relation_2d(
            inputs, self.query_kernel, self.key_kernel, self.value_kernel, self.geometry,
            kernel_size=spec.kernel_size, strides=spec.strides,
            dilation_rate=spec.dilation_rate, composability=spec.composability,
            scale=spec.scale, implementation=spec.implementation)


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalContext(_OpsLayer):
    """tf_keras `GlobalContext` (see `keras_relnet.layers.GlobalContext`).

    Example:
    >>> GlobalContext(ratio=1 / 4)(tf.ones((1, 5, 5, 8))).shape
    TensorShape([1, 5, 5, 8])
    """

    keras3_class = keras3_layers.GlobalContext

    def build(self, input_shape):
        spec = self.spec
        self.pooling_weights, self.transforms = global_context_weights(
            self.add_weight, int(input_shape[-1]), spec.ratio, spec.pooling, spec.fusion,
            spec.transform, spec.kernel_initializer)
        super().build(input_shape)

    def call(self, inputs):
        outputs, _ = global_context(inputs, self.pooling_weights, self.transforms,
                                    self.spec.pooling, self.spec.transform)
        return outputs


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class SimplifiedNonLocal2D(GlobalContext):
    """tf_keras `SimplifiedNonLocal2D` (see `keras_relnet.layers.SimplifiedNonLocal2D`)."""

    keras3_class = keras3_layers.SimplifiedNonLocal2D


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class SqueezeExcitation(_OpsLayer):
    """tf_keras `SqueezeExcitation` (see `keras_relnet.layers.SqueezeExcitation`)."""

    keras3_class = keras3_layers.SqueezeExcitation

    def build(self, input_shape):
        self.se_weights = squeeze_excitation_weights(
            self.add_weight, int(input_shape[-1]), self.spec.ratio,
            self.spec.kernel_initializer)
        super().build(input_shape)

    def call(self, inputs):
        return squeeze_excitation(inputs, *self.se_weights)


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class NonLocal2D(_OpsLayer):
    """tf_keras `NonLocal2D` (see `keras_relnet.layers.NonLocal2D`)."""

    keras3_class = keras3_layers.NonLocal2D

    def build(self, input_shape):
        (self.theta_weights, self.phi_weights, self.g_weights, self.output_weights,
         self.concat_kernel) = non_local_weights(
            self.add_weight, int(input_shape[-1]), self.spec.reduction, self.spec.mode)
        super().build(input_shape)

    def call(self, inputs):
        spec = self.spec
        outputs, _ = non_local_2d(
            inputs, self.theta_weights, self.phi_weights, self.g_weights,
            self.output_weights, mode=spec.mode, sub_sample=spec.sub_sample,
            use_scale=spec.use_scale, concat_weights=self.concat_kernel)
        return outputs
