"""The `ObjectRelation` Keras layer (object relation module, CVPR 2018)."""

import keras
import tensorflow as tf

from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.ops import checks
from keras_relnet.ops.box_geometry import BOX_FORMATS
from keras_relnet.ops.object_relation import RelationWeights, object_relation


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
class ObjectRelation(BoxInputLayer):
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
        kernel_initializer: initializer of every kernel (paper: N(0, 0.01)).
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
                 kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = checks.check_positive_int("num_heads", num_heads)
        self.key_dim = None if key_dim is None else checks.check_positive_int("key_dim", key_dim)
        self.geometry_dim = checks.check_positive_int("geometry_dim", geometry_dim)
        if geometry_dim % 8:
            raise ValueError(f"`geometry_dim` must be a multiple of 8 (4 coordinates x sines "
                             f"and cosines); received {geometry_dim}.")
        self.use_geometry = bool(use_geometry)
        self.residual = bool(residual)
        self.box_format = checks.check_choice("box_format", box_format, BOX_FORMATS)
        self.size_offset = checks.check_finite_number("size_offset", size_offset)
        self.query_chunk_size = (None if query_chunk_size is None else
                                 checks.check_positive_int("query_chunk_size", query_chunk_size))
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=0.01))

    def build(self, features_shape, boxes_shape, key_mask_shape=None):
        width = checked_object_inputs(features_shape, boxes_shape, key_mask_shape)
        self.relation_weights = object_relation_weights(
            self.add_weight, width, self.num_heads, self.key_dim, self.geometry_dim,
            self.use_geometry, self.kernel_initializer)

    def call(self, features, boxes, key_mask=None, return_attention_scores=False):
        features = tf.cast(features, self.compute_dtype)
        outputs = object_relation(
            features, boxes, self.relation_weights, self.num_heads, key_mask=key_mask,
            box_format=self.box_format, size_offset=self.size_offset,
            geometry_dim=self.geometry_dim, query_chunk_size=self.query_chunk_size,
            return_attention=return_attention_scores)
        relation, attention = outputs if return_attention_scores else (outputs, None)
        if self.residual:
            relation = tf.nn.relu(features + relation)
        return (relation, attention) if return_attention_scores else relation

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

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            geometry_dim=self.geometry_dim,
            use_geometry=self.use_geometry,
            residual=self.residual,
            box_format=self.box_format,
            size_offset=self.size_offset,
            query_chunk_size=self.query_chunk_size,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def object_relation_weights(add_weight, width, num_heads, key_dim, geometry_dim, use_geometry,
                            kernel_initializer):
    """Creates the weights of an object relation module with `add_weight`.

    Shared by the Keras 3 layer and the tf_keras one of `keras_relnet.garden`.

    Returns:
        A `RelationWeights` (geometry weights None without the geometric term).
    """
    if width % num_heads:
        raise ValueError(
            f"`num_heads` ({num_heads}) must divide the feature width of "
            f"`features`; received width {width}."
        )
    key_width = num_heads * (key_dim or width // num_heads)
    kernel = lambda name, shape: add_weight(name=name, shape=shape,
                                            initializer=kernel_initializer)
    bias = lambda name, size: add_weight(name=name, shape=(size,), initializer="zeros")
    geometry = ()
    if use_geometry:
        geometry = (kernel("geometry_kernel", (geometry_dim, num_heads)),
                    bias("geometry_bias", num_heads))
    return RelationWeights(
        kernel("query_kernel", (width, key_width)), bias("query_bias", key_width),
        kernel("key_kernel", (width, key_width)), bias("key_bias", key_width),
        kernel("value_kernel", (width, width)), bias("output_bias", width), *geometry)
