"""The `SpatialRelation` Keras layer: the relation among one frame's detections."""

import keras
import tensorflow as tf

from keras_relnet.families import object_relation as family
from keras_relnet.families.object_relation import ObjectRelationOptions
from keras_relnet.families.options import FamilyFront
from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.layers.object_relation import checked_object_inputs


@keras.saving.register_keras_serializable(package="keras_relnet")
class SpatialRelation(FamilyFront, BoxInputLayer):
    """The object relation module over the detections of one frame, for tracking.

    Each detection's feature gains the relation to the frame's other
    detections (Xu et al., "Spatial-Temporal Relation Networks for
    Multi-Object Tracking", ICCV 2019), computed by the object relation op:

        f'_i = f_i + r_i,   r_i = concat_h(sum_j A_ij (f_j W_V)_h) + b
        A    = softmax_j(log(max(w_G, 1e-6)) + (f_i W_Q)_h . (f_j W_K)_h / sqrt(d_k))

    with `w_G` the learned weight of the relative geometry of boxes i and j.
    Padded detections (`detection_mask` False) and boxes with a non-finite coordinate
    are not keys; they still get `f + b`.

    Args:
        num_heads: attention heads; must divide the feature width D.
        key_dim: query/key width per head; None means `D / num_heads`.
        geometry_dim: size of the sinusoidal geometry embedding (multiple of 8).
        use_geometry: add the geometric term (False: appearance only).
        box_format: "xyxy" (MOTChallenge boxes converted to corners) or "yxyx".
        size_offset: added to box widths and heights.
        query_chunk_size: queries per chunk (bounds memory); None: one chunk.
        kernel_initializer: initializer of every kernel (None: N(0, 0.01)).
        kernel_regularizer: regularizer of the query, key, value and geometry
            kernels.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        features: `[frames, detections, D]`.
        boxes: `[frames, detections, 4]` corners; no gradient flows into them.
        detection_mask: optional `[frames, detections]` bool, False for padding.

    Output shape:
        `[frames, detections, D]`.

    Example:
    >>> layer = SpatialRelation(num_heads=2)
    >>> boxes = tf.constant([[[0.0, 0, 10, 20], [5, 0, 15, 20]]])
    >>> layer(tf.ones([1, 2, 8]), boxes).shape
    TensorShape([1, 2, 8])
    """

    def __init__(self, num_heads=4, key_dim=None, geometry_dim=64, use_geometry=True,
                 box_format="xyxy", size_offset=0.0, query_chunk_size=256,
                 kernel_initializer=None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        options = ObjectRelationOptions(num_heads, key_dim, geometry_dim, use_geometry, False,
                                        box_format, size_offset, query_chunk_size,
                                        kernel_initializer)
        self.set_family(options, kernel_regularizer)

    def build(self, features_shape, boxes_shape, detection_mask_shape=None):
        width = checked_object_inputs(features_shape, boxes_shape, detection_mask_shape)
        self.family_weights = family.create_weights(self.add_weight, self.options, width,
                                                    self.kernel_regularizer)

    def call(self, features, boxes, detection_mask=None):
        features = tf.cast(features, self.compute_dtype)
        return features + family.forward(features, boxes, self.family_weights, self.options,
                                         key_mask=detection_mask)

    def compute_output_shape(self, features_shape, boxes_shape, detection_mask_shape=None):
        checked_object_inputs(features_shape, boxes_shape, detection_mask_shape)
        return tuple(features_shape)

    def compute_output_spec(self, features, boxes, detection_mask=None):
        return keras.KerasTensor(self.compute_output_shape(
            features.shape, boxes.shape, None if detection_mask is None else detection_mask.shape),
            dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        del config["residual"]
        return config
