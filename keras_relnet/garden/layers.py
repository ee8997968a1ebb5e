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
from keras_relnet.layers.image_layer import ImageLayer
from keras_relnet.layers.local_relation import local_relation_weights
from keras_relnet.layers.non_local import non_local_weights
from keras_relnet.layers.object_relation import object_relation_weights
from keras_relnet.layers.relation_box_head import check_box_head_inputs, head_dense
from keras_relnet.layers.squeeze_excitation import squeeze_excitation_weights
from keras_relnet.ops.context import global_context, non_local_2d, squeeze_excitation
from keras_relnet.ops.duplicate_removal import learned_detections, refine_candidates
from keras_relnet.ops.local_relation import local_relation_2d
from keras_relnet.ops.object_relation import RelationWeights, object_relation

_BASE_ARGUMENTS = ("name", "trainable", "dtype", "autocast", "dynamic", "input_shape",
                   "batch_input_shape", "input_dim")
_PACKAGE = "keras_relnet_garden"


class _OpsLayer(tf_keras.layers.Layer):
    """A tf_keras layer whose options are those of `keras3_class`, checked by it."""

    keras3_class = None

    def __init__(self, kernel_regularizer=None, **kwargs):
        base = {key: kwargs.pop(key) for key in list(kwargs) if key in _BASE_ARGUMENTS}
        super().__init__(**base)
        if issubclass(self.keras3_class, ImageLayer):
            # Model Garden's models are NHWC, whatever Keras 3's global setting.
            data_format = kwargs.setdefault("data_format", "channels_last")
            if data_format != "channels_last":
                raise ValueError("Model Garden layers take NHWC inputs: `data_format` must be "
                                 f"'channels_last'; received {data_format!r}.")
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


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class ObjectRelation(_OpsLayer):
    """tf_keras `ObjectRelation` (see `keras_relnet.layers.ObjectRelation`).

    Boxes and the key mask are keyword arguments: tf_keras casts only the first
    positional argument to the compute dtype, so pixel boxes keep float32.

    Example:
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 1, 1, 2], [1, 1, 2, 2]]])
    >>> ObjectRelation(num_heads=4)(tf.ones([1, 3, 32]), boxes=boxes).shape
    TensorShape([1, 3, 32])
    """

    keras3_class = keras3_layers.ObjectRelation

    def build(self, input_shape):
        spec = self.spec
        self.relation_weights = object_relation_weights(
            self.add_weight, int(input_shape[-1]), spec.num_heads, spec.key_dim, spec.geometry_dim,
            spec.use_geometry, spec.kernel_initializer)
        super().build(input_shape)

    def call(self, features, boxes=None, key_mask=None):
        spec = self.spec
        relation = object_relation(
            features, boxes, RelationWeights(*self.relation_weights), spec.num_heads,
            key_mask=key_mask, box_format=spec.box_format, size_offset=spec.size_offset,
            geometry_dim=spec.geometry_dim, query_chunk_size=spec.query_chunk_size)
        return tf.nn.relu(features + relation) if spec.residual else relation

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class RelationDetectionHead(tf_keras.layers.Layer):
    """The 2fc+RM box head for Model Garden's Faster/Mask R-CNN.

    The tf_keras twin of `keras_relnet.layers.RelationBoxHead` (same weights,
    same math): per RoI, flatten -> `fc -> + relation -> ReLU` `num_fcs` times,
    then the class scores and box deltas. `RelationMaskRCNNModel` calls it as
    `head(roi_features, rois=rois, roi_mask=mask)`: the boxes go by keyword so
    tf_keras never casts them to a 16-bit compute dtype.

    Args:
        num_classes: classes including background.
        fc_dims: width of each fc layer (paper: 1024).
        num_fcs: fc layers (paper: 2).
        use_relation: add an object relation module after every fc.
        num_relation_heads: heads of each relation module (paper: 16); must
            divide `fc_dims`.
        geometry_dim: size of the geometry embedding.
        query_chunk_size: relation queries per chunk (bounds memory).
        class_agnostic_bbox_pred: one box regression for all classes.
        kernel_regularizer: tf_keras regulariser of the fc kernels.
        **kwargs: base layer arguments.

    Example:
    >>> head = RelationDetectionHead(num_classes=3, fc_dims=32, num_relation_heads=4)
    >>> rois = tf.constant([[[0.0, 0, 10, 10], [0, 10, 10, 20]]])
    >>> scores, boxes = head(tf.ones([1, 2, 7, 7, 8]), rois=rois)
    >>> scores.shape, boxes.shape
    (TensorShape([1, 2, 3]), TensorShape([1, 2, 12]))
    """

    def __init__(self, num_classes, fc_dims=1024, num_fcs=2, use_relation=True,
                 num_relation_heads=16, geometry_dim=64, query_chunk_size=256,
                 class_agnostic_bbox_pred=False, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        keras3_layers.RelationBoxHead(  # validates the options
            num_classes, fc_dim=fc_dims, num_fcs=num_fcs, use_relation=use_relation,
            num_heads=num_relation_heads, geometry_dim=geometry_dim,
            query_chunk_size=query_chunk_size, class_agnostic_boxes=class_agnostic_bbox_pred)
        if use_relation and fc_dims % num_relation_heads:
            raise ValueError(f"`num_relation_heads` ({num_relation_heads}) must divide "
                             f"`fc_dims` ({fc_dims}).")
        self.options = dict(num_classes=num_classes, fc_dims=fc_dims, num_fcs=num_fcs,
                            use_relation=use_relation, num_relation_heads=num_relation_heads,
                            geometry_dim=geometry_dim, query_chunk_size=query_chunk_size,
                            class_agnostic_bbox_pred=class_agnostic_bbox_pred)
        self.kernel_regularizer = tf_keras.regularizers.get(kernel_regularizer)
        dense = lambda units, name, stddev=None: head_dense(
            tf_keras.layers, units, name, stddev, kernel_regularizer=self.kernel_regularizer)
        self.fcs = [dense(fc_dims, f"fc{index + 6}") for index in range(num_fcs)]
        self.relations = [
            ObjectRelation(num_heads=num_relation_heads, geometry_dim=geometry_dim,
                           query_chunk_size=query_chunk_size, name=f"relation{index + 1}")
            for index in range(num_fcs)] if use_relation else []
        self.classifier = dense(num_classes, "detection-scores", 0.01)
        self.box_regressor = dense(4 * (1 if class_agnostic_bbox_pred else num_classes),
                                   "detection-boxes", 0.001)

    def call(self, roi_features, rois=None, roi_mask=None, training=None,
             return_features=False):
        """Class scores and box deltas (and, if asked, the last fc's features).

        Args:
            roi_features: `[batch, rois, h, w, channels]`.
            rois: `[batch, rois, 4]` boxes (yxyx) for the relation geometry.
            roi_mask: optional `[batch, rois]` bool, False for RoIs that are
                not relation keys.
            training: unused (no dropout or batch norm).
            return_features: also return the `[batch, rois, fc_dims]` features
                (the duplicate removal network's appearance input).

        Returns:
            `(class_outputs, box_outputs)` or `(class_outputs, box_outputs, features)`.
        """
        roi_features, rois, roi_mask = check_box_head_inputs(roi_features, rois, roi_mask,
                                                             boxes_name="rois")
        _, _, height, width, channels = roi_features.shape
        shape = tf.shape(roi_features)
        hidden = tf.reshape(roi_features, [shape[0], shape[1], height * width * channels])
        for index, fc in enumerate(self.fcs):
            hidden = fc(hidden)
            if self.relations:
                hidden += self.relations[index](hidden, boxes=rois, key_mask=roi_mask)
            hidden = tf.nn.relu(hidden)
        outputs = self.classifier(hidden), self.box_regressor(hidden)
        return outputs + (hidden,) if return_features else outputs

    def get_config(self):
        return {**super().get_config(), **self.options,
                "kernel_regularizer": tf_keras.regularizers.serialize(self.kernel_regularizer)}


@tf_keras.saving.register_keras_serializable(package=_PACKAGE)
class DuplicateRemoval(tf_keras.layers.Layer):
    """tf_keras `DuplicateRemoval` (see `keras_relnet.layers.DuplicateRemoval`).

    The learned NMS of the end-to-end relation detector: same sub-layers,
    weight order and forward pass (`ops.duplicate_removal.refine_candidates`)
    as the Keras 3 layer. The head features come first (tf_keras casts them
    to the compute dtype); scores, boxes and the RoI mask go by keyword and
    keep their dtype.

    Args:
        **kwargs: the arguments of the Keras 3 `DuplicateRemoval` (validated
            by it) and the base layer arguments.

    Example:
    >>> layer = DuplicateRemoval(top_k=4, embedding_dim=16, rank_dim=32, num_heads=2, key_dim=4)
    >>> boxes = tf.constant([[[0.0, 0, 1, 1], [0, 0, 1, 0.9], [2, 2, 3, 3]]])
    >>> scores = tf.constant([[[0.9, 0.1], [0.8, 0.1], [0.3, 0.6]]])
    >>> layer(tf.ones([1, 3, 8]), scores=scores, boxes=boxes)["scores"].shape
    TensorShape([1, 2, 4, 5])
    """

    def __init__(self, **kwargs):
        base = {key: kwargs.pop(key) for key in list(kwargs) if key in _BASE_ARGUMENTS}
        super().__init__(**base)
        config = keras3_layers.DuplicateRemoval(**kwargs).get_config()  # validates
        for key in ("name", "trainable", "dtype"):
            config.pop(key)
        self.options = config
        dense = lambda units, name, **extra: tf_keras.layers.Dense(
            units, name=name, kernel_initializer=tf_keras.initializers.RandomNormal(stddev=0.01),
            **extra)
        self.rank_embedding = dense(config["embedding_dim"], "rank_embedding")
        self.appearance_embedding = dense(config["embedding_dim"], "appearance_embedding")
        self.relation = ObjectRelation(
            **{key: config[key] for key in ("num_heads", "key_dim", "geometry_dim", "box_format",
                                            "size_offset", "query_chunk_size")},
            residual=True, name="relation")
        self.classifier = dense(len(config["iou_thresholds"]), "threshold_logits",
                                bias_initializer=tf_keras.initializers.Constant(-3.0))

    def call(self, features, scores=None, boxes=None, roi_mask=None):
        """Candidates and their refined scores (see `refine_candidates`).

        Args:
            features: `[batch, rois, D]` head features.
            scores: `[batch, rois, classes]` class probabilities without background.
            boxes: `[batch, rois, classes, 4]` or `[batch, rois, 4]`.
            roi_mask: optional `[batch, rois]` bool, False for RoIs that are
                not candidates.

        Returns:
            The dict of the Keras 3 layer's `call`.
        """
        return refine_candidates(
            scores, boxes, features, self.options["top_k"], self.options["rank_dim"],
            self.appearance_embedding, self.rank_embedding,
            lambda x, candidate_boxes, mask: self.relation(x, boxes=candidate_boxes,
                                                           key_mask=mask),
            self.classifier, roi_mask)

    def detect(self, features, scores=None, boxes=None, roi_mask=None):
        """Detections without NMS, in `tf.image.combined_non_max_suppression` form."""
        return learned_detections(self(features, scores=scores, boxes=boxes, roi_mask=roi_mask),
                                  self.options["max_detections"], self.options["score_threshold"])

    def get_config(self):
        # Plain list: tf_keras wraps the stored one in a tracking ListWrapper.
        return {**super().get_config(), **self.options,
                "iou_thresholds": list(self.options["iou_thresholds"])}
