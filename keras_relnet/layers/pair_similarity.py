"""The `PairSimilarity` Keras layer: the learned (tracklet, detection) similarity."""

import keras
import tensorflow as tf

from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.ops import checks
from keras_relnet.ops.box_geometry import BOX_FORMATS
from keras_relnet.ops.spatial_temporal_relation import (
    PairWeights,
    pair_similarity,
    pair_similarity_logits,
)

_GEOMETRY_FEATURES = 6  # location (4) and motion (2)


def _checked_pair_inputs(track_features_shape, detection_features_shape, track_boxes_shape, track_mask_shape,
                         detection_boxes_shape):
    """Checks the five inputs of a pair similarity agree; returns the width D."""
    shapes = dict(track_features=(track_features_shape, 3, "[batch, tracklets, channels]"),
                  detection_features=(detection_features_shape, 3, "[batch, detections, channels]"),
                  track_boxes=(track_boxes_shape, 4, "[batch, tracklets, frames, 4]"),
                  track_mask=(track_mask_shape, 3, "[batch, tracklets, frames]"),
                  detection_boxes=(detection_boxes_shape, 3, "[batch, detections, 4]"))
    checked = {name: checks.check_rank(name, shape, rank, layout)
               for name, (shape, rank, layout) in shapes.items()}
    for name in ("track_boxes", "detection_boxes"):
        if checked[name][-1] != 4:
            raise ValueError(f"`{name}` must have shape {shapes[name][2]}; received shape "
                             f"{checked[name]}.")
    agree = [("detection_features", 0, "batch"), ("track_boxes", 0, "batch"),
             ("track_boxes", 1, "tracklets"), ("track_mask", 0, "batch"),
             ("track_mask", 1, "tracklets"), ("detection_boxes", 0, "batch")]
    sizes = [(name, checked[name][axis], checked["track_features"][axis], what, "track_features")
             for name, axis, what in agree]
    sizes += [("detection_boxes", checked["detection_boxes"][1],
               checked["detection_features"][1], "detections", "detection_features"),
              ("track_mask", checked["track_mask"][2], checked["track_boxes"][2], "frames",
               "track_boxes"),
              ("detection_features", checked["detection_features"][2],
               checked["track_features"][2], "channels", "track_features")]
    for name, size, other, what, other_name in sizes:
        if None not in (size, other) and size != other:
            raise ValueError(f"`{name}` must have the same {what} size as `{other_name}` "
                             f"({other}); received shape {checked[name]}.")
    width = checked["track_features"][-1]
    if width is None:
        raise ValueError("`track_features` must have a known last (channels) dimension; "
                         f"received shape {checked['track_features']}.")
    return width


@keras.saving.register_keras_serializable(package="keras_relnet")
class PairSimilarity(BoxInputLayer):
    """The similarity in (0, 1) of every (tracklet, detection) pair.

    Four features of each pair, concatenated, go through a small MLP and a
    sigmoid (Xu et al., ICCV 2019; the location and motion features are this
    library's choice, see `docs/tracking.md`):

        phi_R = W_R [f_T ; f_D]                      relation feature
        phi_C = cos(W_C f_T, W_C f_D)                cosine feature
        loc   = (dx / w, dy / h, log(w_D / w), log(h_D / h))
        mot   = ((dx - g v_x) / w, (dy - g v_y) / h)
        s     = sigmoid(MLP([phi_R ; phi_C ; ReLU(W_G [loc ; mot] + b_G)]))

    with (dx, dy) the detection's centre minus that of the tracklet's last
    observed box (w, h), g the frames since that box and v the tracklet's
    mean velocity over its window. A pair whose tracklet has no observed
    frame, whose detection box is not finite or whose detection is padding
    gets s = 0 exactly.

    Args:
        relation_dim: width R of the relation feature.
        cosine_dim: width C of the embedding the cosine compares.
        geometry_units: width G of the location and motion embedding.
        hidden_units: widths of the MLP's ReLU hidden layers.
        box_format: "xyxy" or "yxyx".
        kernel_initializer: initializer of every kernel.
        kernel_regularizer: regularizer of every kernel.
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        track_features: `[batch, M, D]`, pooled tracklet features
            (`TemporalRelation`).
        detection_features: `[batch, N, D]`.
        track_boxes: `[batch, M, T, 4]`, each tracklet's boxes in its last T
            frames (frame T-1 the previous one); no gradient flows into boxes.
        track_mask: `[batch, M, T]` bool, the frames it was observed in.
        detection_boxes: `[batch, N, 4]`.
        detection_mask: optional `[batch, N]` bool, False for padding.
        return_logits: return the logits `[batch, M, N]` and the bool
            validity of each pair instead of the similarity.

    Output shape:
        `[batch, M, N]`.

    Example:
    >>> layer = PairSimilarity()
    >>> boxes = tf.constant([[[[0.0, 0, 10, 20]] * 3]])
    >>> layer(tf.ones([1, 1, 8]), tf.ones([1, 2, 8]), boxes, tf.ones([1, 1, 3], tf.bool),
    ...       tf.constant([[[1.0, 0, 11, 20], [50, 0, 60, 20]]])).shape
    TensorShape([1, 1, 2])
    """

    def __init__(self, relation_dim=32, cosine_dim=32, geometry_units=16, hidden_units=(64,),
                 box_format="xyxy", kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.relation_dim = checks.check_positive_int("relation_dim", relation_dim)
        self.cosine_dim = checks.check_positive_int("cosine_dim", cosine_dim)
        self.geometry_units = checks.check_positive_int("geometry_units", geometry_units)
        if isinstance(hidden_units, int) or not hasattr(hidden_units, "__iter__"):
            raise ValueError("`hidden_units` must be a sequence of positive ints; received "
                             f"{hidden_units!r}.")
        self.hidden_units = tuple(checks.check_positive_int("hidden_units", units)
                                  for units in hidden_units)
        self.box_format = checks.check_choice("box_format", box_format, BOX_FORMATS)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, track_features_shape, detection_features_shape, track_boxes_shape, track_mask_shape,
              detection_boxes_shape, detection_mask_shape=None):
        width = _checked_pair_inputs(track_features_shape, detection_features_shape, track_boxes_shape,
                                     track_mask_shape, detection_boxes_shape)
        kernel = lambda name, shape: self.add_weight(
            name=name, shape=shape, initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer)
        bias = lambda name, size: self.add_weight(name=name, shape=(size,), initializer="zeros")
        hidden, inputs = [], self.relation_dim + 1 + self.geometry_units
        for index, units in enumerate(self.hidden_units):
            hidden.append((kernel(f"hidden_kernel_{index}", (inputs, units)),
                           bias(f"hidden_bias_{index}", units)))
            inputs = units
        self.pair_weights = PairWeights(
            kernel("relation_track_kernel", (width, self.relation_dim)),
            kernel("relation_detection_kernel", (width, self.relation_dim)),
            bias("relation_bias", self.relation_dim),
            kernel("cosine_kernel", (width, self.cosine_dim)),
            kernel("geometry_kernel", (_GEOMETRY_FEATURES, self.geometry_units)),
            bias("geometry_bias", self.geometry_units), tuple(hidden),
            kernel("output_kernel", (inputs, 1)), bias("output_bias", 1))

    def call(self, track_features, detection_features, track_boxes, track_mask,
             detection_boxes, detection_mask=None, return_logits=False):
        width = _checked_pair_inputs(track_features.shape, detection_features.shape,
                                     track_boxes.shape, track_mask.shape, detection_boxes.shape)
        built = self.pair_weights.relation_track_kernel.shape[0]
        if width != built:
            raise ValueError(f"`track_features` must have {built} channels (the width the "
                             f"layer was built for); received shape {tuple(track_features.shape)}.")
        cast = lambda t: tf.cast(t, self.compute_dtype)
        logits, valid = pair_similarity_logits(
            cast(track_features), cast(detection_features), track_boxes,
            tf.cast(track_mask, tf.bool), detection_boxes, self.pair_weights,
            detection_mask=detection_mask, box_format=self.box_format)
        return (logits, valid) if return_logits else pair_similarity(logits, valid)

    def compute_output_shape(self, track_features_shape, detection_features_shape, track_boxes_shape,
                             track_mask_shape, detection_boxes_shape, detection_mask_shape=None):
        _checked_pair_inputs(track_features_shape, detection_features_shape, track_boxes_shape, track_mask_shape,
                             detection_boxes_shape)
        return (track_features_shape[0], track_features_shape[1], detection_features_shape[1])

    def compute_output_spec(self, track_features, detection_features, track_boxes, track_mask,
                            detection_boxes, detection_mask=None, return_logits=False):
        shape = self.compute_output_shape(track_features.shape, detection_features.shape,
                                          track_boxes.shape, track_mask.shape,
                                          detection_boxes.shape)
        similarity = keras.KerasTensor(shape, dtype=self.compute_dtype)
        if not return_logits:
            return similarity
        return similarity, keras.KerasTensor(shape, dtype="bool")

    def get_config(self):
        return {**super().get_config(), "relation_dim": self.relation_dim,
                "cosine_dim": self.cosine_dim, "geometry_units": self.geometry_units,
                "hidden_units": list(self.hidden_units), "box_format": self.box_format,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer)}
