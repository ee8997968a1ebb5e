"""The `TemporalRelation` Keras layer: attention pooling over a tracklet's past."""

import keras
import tensorflow as tf

from keras_relnet.ops.spatial_temporal_relation import temporal_attention


def checked_history(features_shape, frame_mask_shape):
    """Checks `features [..., T, D]` and `frame_mask [..., T]` agree; returns D."""
    features = tuple(features_shape)
    mask = tuple(frame_mask_shape)
    if len(features) < 2 or len(mask) != len(features) - 1:
        raise ValueError(f"`features` must be [..., frames, channels] and `frame_mask` "
                         f"[..., frames]; received shapes {features} and {mask}.")
    for size, other in zip(features[:-1], mask):
        if None not in (size, other) and size != other:
            raise ValueError(f"`frame_mask` must match the leading dimensions of `features` "
                             f"{features[:-1]}; received shape {mask}.")
    if features[-1] is None:
        raise ValueError("`features` must have a known last (channels) dimension; received "
                         f"shape {features}.")
    return features[-1]


@keras.saving.register_keras_serializable(package="keras_relnet")
class TemporalRelation(keras.layers.Layer):
    """Attention pooling of a tracklet's features over its last T frames.

    The tracklet feature is a learned, softmax-weighted mean of its past
    (spatially related) features (Xu et al., ICCV 2019):

        a_t = softmax_t(<w_T, f'_t>)  over the frames where `frame_mask` is True
        f_T = sum_t a_t f'_t

    A frame where `frame_mask` is False (missed, or before the tracklet
    began) is ignored; a tracklet with no observed frame pools to zeros. The detection does not
    enter the attention, so a tracklet's feature is computed once per frame,
    not once per pair. The logits run in float32 under mixed precision.

    Args:
        attention_initializer: initializer of `w_T` (zeros: the plain mean
            of the observed frames at the start of training).
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        features: `[..., T, D]`, the tracklet's features per past frame.
        frame_mask: `[..., T]` bool, True in the frames where it was observed.
        return_attention_scores: also return the float32 weights `[..., T]`.

    Output shape:
        `[..., D]`.

    Example:
    >>> layer = TemporalRelation()
    >>> layer(tf.ones([3, 5, 8]), tf.ones([3, 5], tf.bool)).shape
    TensorShape([3, 8])
    """

    def __init__(self, attention_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.attention_initializer = keras.initializers.get(attention_initializer)

    def build(self, features_shape, frame_mask_shape):
        width = checked_history(features_shape, frame_mask_shape)
        self.attention_vector = self.add_weight(name="attention_vector", shape=(width,),
                                                initializer=self.attention_initializer)

    def call(self, features, frame_mask, return_attention_scores=False):
        width = checked_history(features.shape, frame_mask.shape)
        if width != self.attention_vector.shape[0]:
            raise ValueError(f"`features` must have {self.attention_vector.shape[0]} channels "
                             f"(the width the layer was built for); received shape "
                             f"{tuple(features.shape)}.")
        pooled, attention = temporal_attention(tf.cast(features, self.compute_dtype),
                                               tf.cast(frame_mask, tf.bool), self.attention_vector)
        return (pooled, attention) if return_attention_scores else pooled

    def compute_output_shape(self, features_shape, frame_mask_shape):
        checked_history(features_shape, frame_mask_shape)
        return tuple(features_shape[:-2]) + (features_shape[-1],)

    def compute_output_spec(self, features, frame_mask, return_attention_scores=False):
        pooled = keras.KerasTensor(self.compute_output_shape(features.shape, frame_mask.shape),
                                   dtype=self.compute_dtype)
        if not return_attention_scores:
            return pooled
        return pooled, keras.KerasTensor(tuple(frame_mask.shape), dtype="float32")

    def get_config(self):
        return {**super().get_config(),
                "attention_initializer": keras.initializers.serialize(self.attention_initializer)}
