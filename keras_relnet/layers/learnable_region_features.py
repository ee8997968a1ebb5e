"""The `LearnableRegionFeatures` Keras layer (object-pixel relation, ECCV 2018)."""

import keras
import tensorflow as tf

from keras_relnet.layers.box_inputs import BoxInputLayer
from keras_relnet.ops import checks
from keras_relnet.ops.box_geometry import BOX_FORMATS
from keras_relnet.ops.region_features import (
    aggregate_regions,
    learned_region_weights,
    yxyx_boxes,
)


@keras.saving.register_keras_serializable(package="keras_relnet")
class LearnableRegionFeatures(BoxInputLayer):
    """Region features learned as object-pixel relations, a drop-in for RoIAlign.

    Each of the `h x w` parts of a box is a softmax-weighted sum of the
    feature pixels in the box's support (the box enlarged by `context`); the
    weights combine a geometric term (box-corner and pixel-position sinusoids,
    projected per part) and an appearance term (a 1x1 convolution with one
    output per part). See `keras_relnet.ops.region_features`; RoIAlign is the
    special case of fixed bilinear weights.

    Args:
        output_size: `h` or `(h, w)` parts (7 like RoIAlign).
        feature_stride: image pixels per feature pixel (boxes are in image
            pixels).
        context: support = the box enlarged by this factor.
        embedding_dim: sinusoid size per coordinate.
        projection_dim: common size of the box and pixel projections.
        box_format: "yxyx" or "xyxy".
        **kwargs: base `keras.layers.Layer` arguments.

    Call arguments:
        feature_map: `[batch, height, width, channels]`.
        boxes: `[batch, rois, 4]` in image pixels.

    Output shape:
        `[batch, rois, h, w, channels]`, the shape of an RoIAlign crop.

    Example:
    >>> layer = LearnableRegionFeatures(output_size=2, embedding_dim=4, projection_dim=4)
    >>> layer(tf.ones([1, 8, 8, 3]), tf.constant([[[1.0, 1, 5, 5]]])).shape
    TensorShape([1, 1, 2, 2, 3])
    """

    def __init__(self, output_size=7, feature_stride=1.0, context=2.0, embedding_dim=32,
                 projection_dim=64, box_format="yxyx", **kwargs):
        super().__init__(**kwargs)
        size = (output_size, output_size) if isinstance(output_size, int) else output_size
        self.output_size = tuple(checks.check_positive_int("output_size", s) for s in size)
        if len(self.output_size) != 2:
            raise ValueError(f"`output_size` must be an int or (height, width); received "
                             f"{output_size!r}.")
        self.feature_stride = checks.check_positive_number("feature_stride", feature_stride)
        self.context = checks.check_positive_number("context", context)
        self.embedding_dim = checks.check_positive_int("embedding_dim", embedding_dim)
        if embedding_dim % 2:
            raise ValueError(f"`embedding_dim` must be even (sines and cosines); received "
                             f"{embedding_dim}.")
        self.projection_dim = checks.check_positive_int("projection_dim", projection_dim)
        self.box_format = checks.check_choice("box_format", box_format, BOX_FORMATS)

    def build(self, feature_map_shape, boxes_shape):
        channels = checks.checked_channels("feature_map", feature_map_shape)
        boxes = checks.check_rank("boxes", boxes_shape, 3, "[batch, rois, 4]")
        if boxes[-1] != 4:
            raise ValueError(f"`boxes` must have shape [batch, rois, 4]; received shape {boxes}.")
        parts = self.output_size[0] * self.output_size[1]
        normal = keras.initializers.RandomNormal(stddev=0.01)
        self.appearance_kernel = self.add_weight(
            name="appearance_kernel", shape=(channels, parts), initializer=normal)
        self.box_projection = self.add_weight(
            name="box_projection", shape=(parts, 4 * self.embedding_dim, self.projection_dim),
            initializer=normal)
        self.image_projection = self.add_weight(
            name="image_projection", shape=(2 * self.embedding_dim, self.projection_dim),
            initializer=normal)

    def call(self, feature_map, boxes):
        feature_map = tf.cast(feature_map, self.compute_dtype)
        weights = learned_region_weights(
            feature_map, yxyx_boxes(boxes, self.box_format), self.appearance_kernel,
            self.box_projection, self.image_projection, self.output_size,
            self.feature_stride, self.context, self.embedding_dim)
        return aggregate_regions(feature_map, weights, self.output_size)

    def compute_output_shape(self, feature_map_shape, boxes_shape):
        return (feature_map_shape[0], boxes_shape[1]) + self.output_size + (
            feature_map_shape[-1],)

    def get_config(self):
        config = super().get_config()
        config.update(
            output_size=list(self.output_size),
            feature_stride=self.feature_stride,
            context=self.context,
            embedding_dim=self.embedding_dim,
            projection_dim=self.projection_dim,
            box_format=self.box_format,
        )
        return config
