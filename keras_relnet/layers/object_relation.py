"""The `ObjectRelation` Keras layer (object relation module, CVPR 2018)."""

import keras
import tensorflow as tf

from keras_relnet.families import object_relation as family
from keras_relnet.families.object_relation import ObjectRelationOptions
from keras_relnet.families.options import FamilyFront
from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.ops import checks


def checked_object_inputs(features_shape, boxes_shape, key_mask_shape=None):
    """Checks `features [B, N, D]`, `boxes [B, N, 4]` and `key_mask [B, N]` agree.

    Args:
        features_shape, boxes_shape, key_mask_shape: the received shapes
            (`key_mask_shape` may be None).

    Returns:
        The feature width D.

    Example:
    >>> checked_object_inputs((2, 5, 16), (2, 5, 4))
    16
    """
    features = checks.check_rank("features", features_shape, 3, "[batch, objects, channels]")
    boxes = checks.check_rank("boxes", boxes_shape, 3, "[batch, objects, 4]")
    if boxes[-1] != 4:
        raise ValueError(f"`boxes` must have shape [batch, objects, 4]; received shape {boxes}.")
    shapes = {"boxes": boxes}
    if key_mask_shape is not None:
        shapes["key_mask"] = checks.check_rank("key_mask", key_mask_shape, 2, "[batch, objects]")
    for name, shape in shapes.items():
        for axis, axis_name in ((0, "batch"), (1, "objects")):
            if None not in (shape[axis], features[axis]) and shape[axis] != features[axis]:
                raise ValueError(
                    f"`{name}` must have the same {axis_name} size as `features` "
                    f"({features[axis]}); received shape {shape} for features of shape "
                    f"{features}."
                )
    if features[-1] is None:
        raise ValueError("`features` must have a known last (channels) dimension; received "
                         f"shape {features}.")
    return features[-1]


@keras.saving.register_keras_serializable(package="keras_relnet")
class ObjectRelation(FamilyFront, BoxInputLayer):
    """Object relation module: attention between objects with a geometric term.

    Each object attends to every other (unmasked) object through its
    appearance features and the relative geometry of their boxes (Hu et al.,
    "Relation Networks for Object Detection", CVPR 2018):

        w_G = ReLU(Dense_{g->heads}(Embed(log-geometry(box_i, box_j))))
        A   = softmax_j(log(max(w_G, 1e-6)) + (f_i W_Q)_h . (f_j W_K)_h / sqrt(d_k))
        r_i = concat_h(sum_j A_ij (f_j W_V)_h) + b

    The output is the relation feature `r` (the caller adds it to `f`), or
    `ReLU(f + r)` with `residual=True`. The geometry runs in float32 under mixed
    precision, and boxes are never cast to float16.

    Args:
        num_heads: attention heads; must divide the feature width D.
        key_dim: query/key width per head; None means `D / num_heads`.
        geometry_dim: size of the sinusoidal geometry embedding (multiple of 8).
        use_geometry: add the geometric term (False: appearance only).
        residual: return `ReLU(features + relation)` instead of the relation.
        box_format: "yxyx" (TF / Model Garden) or "xyxy".
        size_offset: added to box widths and heights (1: the original pixel
            convention).
        query_chunk_size: queries per chunk; bounds the geometry embedding to
            `chunk * N * geometry_dim` floats per image. None: no chunking.
        kernel_initializer: initializer of every kernel (None: the paper's
            N(0, 0.01)).
        kernel_regularizer: regularizer of the query, key, value and geometry
            kernels.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        features: `[batch, objects, D]`.
        boxes: `[batch, objects, 4]`; no gradient flows into them.
        key_mask: optional `[batch, objects]` bool; False marks objects that
            are not keys (padding). A query with no keys gets `r = bias`.
            An object whose box has a non-finite coordinate is not a key
            either, and gets `r = bias` too; the other objects get exactly
            what they get with it masked out.
        return_attention_scores: also return the float32 attention weights
            `[batch, num_heads, objects, objects]`.

    Output shape:
        `[batch, objects, D]`.

    Example:
    >>> layer = ObjectRelation(num_heads=4)
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 1, 1, 2], [1, 1, 2, 2]]])
    >>> layer(tf.ones([1, 3, 32]), boxes).shape
    TensorShape([1, 3, 32])
    """

    def __init__(self, num_heads=16, key_dim=None, geometry_dim=64, use_geometry=True,
                 residual=False, box_format="yxyx", size_offset=0.0, query_chunk_size=256,
                 kernel_initializer=None, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        options = ObjectRelationOptions(num_heads, key_dim, geometry_dim, use_geometry, residual,
                                        box_format, size_offset, query_chunk_size,
                                        kernel_initializer)
        self.set_family(options, kernel_regularizer)

    def build(self, features_shape, boxes_shape, key_mask_shape=None):
        width = checked_object_inputs(features_shape, boxes_shape, key_mask_shape)
        self.family_weights = family.create_weights(self.add_weight, self.options, width,
                                                    self.kernel_regularizer)

    def call(self, features, boxes, key_mask=None, return_attention_scores=False):
        return family.forward(tf.cast(features, self.compute_dtype), boxes, self.family_weights,
                              self.options, key_mask=key_mask,
                              return_attention=return_attention_scores)

    def compute_output_shape(self, features_shape, boxes_shape, key_mask_shape=None):
        checked_object_inputs(features_shape, boxes_shape, key_mask_shape)
        return tuple(features_shape)

    def compute_output_spec(self, features, boxes, key_mask=None,
                            return_attention_scores=False):
        outputs = keras.KerasTensor(self.compute_output_shape(
            features.shape, boxes.shape, None if key_mask is None else key_mask.shape),
            dtype=self.compute_dtype)
        if not return_attention_scores:
            return outputs
        batch, count = features.shape[:2]
        attention_dtype = "float64" if self.compute_dtype == "float64" else "float32"
        return outputs, keras.KerasTensor((batch, self.num_heads, count, count),
                                          dtype=attention_dtype)
