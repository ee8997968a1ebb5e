"""Faster/Mask R-CNN whose box head sees the RoI boxes (the relation head needs them).

Model Garden's `MaskRCNNModel._run_frcnn_head` gives the box head the RoI
features only. `RelationMaskRCNNModel` overrides it (the same sampling and
targets, pinned to tf-models-official 2.20.0) and calls the head as
`head(roi_features, rois=rois, roi_mask=mask)`, where the mask marks the RoIs
that are relation keys: not padding and, in training, not the ground-truth boxes
the sampler mixes in.

With a `duplicate_removal` layer it is the end-to-end detector of the paper:
the learned duplicate removal network runs on the decoded per-class boxes,
the class scores and the head's last features. In training its candidates
and scores are extra outputs (the task adds their loss); at inference its
scores give the detections and no NMS runs (the detection generator only
decodes, `apply_nms=False`).
"""

import tensorflow as tf
from official.vision.modeling import factory, maskrcnn_model
from official.vision.modeling.layers import detection_generator, roi_sampler
from official.vision.ops import box_ops

from keras_relnet.garden.layers import DuplicateRemoval, RelationDetectionHead
from keras_relnet.ops.duplicate_removal import learned_detections

# Passed from the box head to the duplicate removal inside `model_outputs`, then removed.
_HEAD_FEATURES, _RELATION_KEYS = "_relation_head_features", "_relation_keys"
DUPLICATE_REMOVAL_OUTPUTS = ("duplicate_removal_scores", "duplicate_removal_initial_scores",
                             "duplicate_removal_boxes", "duplicate_removal_valid")


class RelationMaskRCNNModel(maskrcnn_model.MaskRCNNModel):
    """`MaskRCNNModel` that passes the RoI boxes and a key mask to its box heads.

    Args:
        duplicate_removal: optional `garden.layers.DuplicateRemoval`, the
            learned NMS; then `detection_generator` must have `apply_nms=False`.
        *args, **kwargs: the `MaskRCNNModel` arguments.
    """

    def __init__(self, *args, duplicate_removal=None, **kwargs):
        super().__init__(*args, **kwargs)
        if duplicate_removal is not None and self.detection_generator.get_config()["apply_nms"]:
            raise ValueError("With `duplicate_removal`, `detection_generator` must have "
                             "apply_nms=False (the learned duplicate removal replaces NMS); "
                             "received apply_nms=True.")
        self.duplicate_removal = duplicate_removal
        self._config_dict["duplicate_removal"] = duplicate_removal

    def _call_box_outputs(self, images, image_shape, anchor_boxes=None, gt_boxes=None,
                          gt_classes=None, training=None, gt_outer_boxes=None):
        model_outputs, intermediate_outputs = super()._call_box_outputs(
            images, image_shape, anchor_boxes=anchor_boxes, gt_boxes=gt_boxes,
            gt_classes=gt_classes, training=training)
        features = model_outputs.pop(_HEAD_FEATURES, None)
        keys = model_outputs.pop(_RELATION_KEYS, None)
        if self.duplicate_removal is None:
            return model_outputs, intermediate_outputs
        if training:
            last = len(self.roi_sampler) - 1
            suffix = f"_{last}" if last else ""
            decoded = self.detection_generator(
                tf.cast(model_outputs[f"box_outputs{suffix}"], tf.float32),
                tf.cast(model_outputs[f"class_outputs{suffix}"], tf.float32),
                intermediate_outputs["current_rois"], image_shape,
                self._cascade_layer_to_weights[last],
                bbox_per_class=not self._config_dict["class_agnostic_bbox_pred"])
        else:
            decoded = {key: model_outputs.pop(key)
                       for key in ("decoded_boxes", "decoded_box_scores")}
        boxes = decoded["decoded_boxes"]  # [B, N, classes or 1, 4]
        if boxes.shape[2] == 1:
            boxes = boxes[:, :, 0]
        # Gradients reach the class scores (s0) and the features, not the boxes.
        candidates = self.duplicate_removal(
            features, scores=decoded["decoded_box_scores"], boxes=tf.stop_gradient(boxes),
            roi_mask=keys)
        if training:
            model_outputs.update(zip(DUPLICATE_REMOVAL_OUTPUTS, (
                candidates["scores"], candidates["initial_scores"], candidates["boxes"],
                candidates["valid"])))
        else:
            options = self.duplicate_removal.options
            found = learned_detections(candidates, options.max_detections,
                                       options.score_threshold)
            model_outputs.update({
                "detection_boxes": found["nmsed_boxes"],
                "detection_scores": found["nmsed_scores"],
                # Score columns skip the background class 0.
                "detection_classes": tf.cast(found["nmsed_classes"], tf.int32) + 1,
                "num_detections": found["valid_detections"],
            })
        return model_outputs, intermediate_outputs

    def _run_frcnn_head(self, features, rois, gt_boxes, gt_classes, training, model_outputs,
                        cascade_num, regression_weights, gt_outer_boxes=None):
        if self.outer_boxes_scale != 1.0:
            raise ValueError("RelationMaskRCNNModel supports `outer_boxes_scale` 1.0 only; "
                             f"received {self.outer_boxes_scale}.")
        matched_gt_boxes = matched_gt_classes = matched_gt_indices = None
        if training and gt_boxes is not None:
            rois = tf.stop_gradient(rois)
            rois, matched_gt_boxes, matched_gt_classes, matched_gt_indices = (
                self.roi_sampler[cascade_num](rois, gt_boxes, gt_classes))
            box_targets = box_ops.encode_boxes(matched_gt_boxes, rois,
                                               weights=regression_weights)
            background = tf.equal(matched_gt_classes, 0)[..., None]
            box_targets = tf.where(background, tf.zeros_like(box_targets), box_targets)
            suffix = f"_{cascade_num}" if cascade_num else ""
            model_outputs.update({f"class_targets{suffix}": matched_gt_classes,
                                  f"box_targets{suffix}": box_targets})
        roi_features = self.roi_aligner(features, rois)
        keys = relation_keys(rois, matched_gt_boxes)
        head_outputs = self.detection_head[cascade_num](
            roi_features, rois=rois, roi_mask=keys, training=training,
            return_features=self.duplicate_removal is not None)
        class_outputs, box_outputs = head_outputs[:2]
        if self.duplicate_removal is not None:  # the last stage's are kept
            model_outputs.update({_HEAD_FEATURES: head_outputs[2], _RELATION_KEYS: keys})
        suffix = f"_{cascade_num}" if cascade_num else ""
        model_outputs.update({f"class_outputs{suffix}": class_outputs,
                              f"box_outputs{suffix}": box_outputs})
        return (class_outputs, box_outputs, model_outputs, matched_gt_boxes,
                matched_gt_classes, matched_gt_indices, rois)


def relation_keys(rois, matched_gt_boxes=None):
    """`[B, N]` bool: the RoIs that are keys of the relation modules.

    Padding RoIs (zero area) are not; in training, neither are the ground-truth
    boxes the sampler mixes in (a sampled RoI equal to its matched box).

    Example:
    >>> rois = tf.constant([[[0.0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 9, 9]]])
    >>> relation_keys(rois, tf.constant([[[0.0, 0, 9, 9], [0, 0, 0, 0], [5, 5, 9, 9]]])).numpy()
    array([[ True, False, False]])
    """
    area = (rois[..., 2] - rois[..., 0]) * (rois[..., 3] - rois[..., 1])
    keys = area > 0
    if matched_gt_boxes is not None:
        is_ground_truth = tf.reduce_all(tf.equal(rois, matched_gt_boxes), axis=-1)
        keys = tf.logical_and(keys, tf.logical_not(is_ground_truth))
    return keys


def build_relation_rcnn(input_specs, model_config, l2_regularizer=None):
    """Model Garden's Faster/Mask R-CNN with the relation box head.

    Builds the stock model, then swaps its box heads for `RelationDetectionHead`
    and its RoI samplers for ones that keep float32 boxes under mixed precision.
    With `duplicate_removal.use_duplicate_removal`, adds the learned duplicate
    removal and makes the detection generator decode only (no NMS).

    Args:
        input_specs: `tf_keras.layers.InputSpec` of the images.
        model_config: a `RelationRCNN` config.
        l2_regularizer: tf_keras regulariser of the kernels.

    Returns:
        A `RelationMaskRCNNModel`.
    """
    stock = factory.build_maskrcnn(input_specs, model_config, l2_regularizer)
    components = dict(stock.get_config())
    head = model_config.detection_head
    relation = model_config.relation_head
    stages = len(components["detection_head"]) if isinstance(
        components["detection_head"], (list, tuple)) else 1
    components["detection_head"] = [
        RelationDetectionHead(
            num_classes=model_config.num_classes, fc_dims=head.fc_dims, num_fcs=head.num_fcs,
            use_relation=relation.use_relation,
            num_relation_heads=relation.num_relation_heads,
            geometry_dim=relation.geometry_dim, query_chunk_size=relation.query_chunk_size,
            class_agnostic_bbox_pred=head.class_agnostic_bbox_pred,
            kernel_regularizer=l2_regularizer,
            name="detection_head" if stage == 0 else f"detection_head_{stage}")
        for stage in range(stages)]
    # The stock samplers take the RoIs positionally: tf_keras would cast them to
    # bfloat16 under mixed precision (8 px steps near 1000).
    components["roi_sampler"] = [
        roi_sampler.ROISampler(**sampler.get_config(), autocast=False)
        for sampler in components["roi_sampler"]]
    learned_nms = model_config.duplicate_removal
    if learned_nms.use_duplicate_removal:
        decoder = components["detection_generator"].get_config()
        components["detection_generator"] = detection_generator.DetectionGenerator(
            **{**decoder, "apply_nms": False})
        components["duplicate_removal"] = DuplicateRemoval(
            top_k=learned_nms.top_k, iou_thresholds=learned_nms.iou_thresholds,
            embedding_dim=learned_nms.embedding_dim, rank_dim=learned_nms.rank_dim,
            num_heads=learned_nms.num_heads, key_dim=learned_nms.key_dim,
            geometry_dim=learned_nms.geometry_dim,
            query_chunk_size=learned_nms.query_chunk_size,
            max_detections=decoder["max_num_detections"],
            score_threshold=learned_nms.score_threshold, kernel_regularizer=l2_regularizer,
            name="duplicate_removal")
    return RelationMaskRCNNModel(**components)
