"""Faster/Mask R-CNN whose box head sees the RoI boxes (the relation head needs them).

Model Garden's `MaskRCNNModel._run_frcnn_head` gives the box head the RoI
features only. `RelationMaskRCNNModel` overrides it (the same sampling and
targets, pinned to tf-models-official 2.20.0) and calls the head as
`head(roi_features, rois=rois, roi_mask=mask)`, where the mask marks the RoIs
that are relation keys: not padding and, in training, not the ground-truth boxes
the sampler mixes in.
"""

import tensorflow as tf
from official.vision.modeling import factory, maskrcnn_model
from official.vision.modeling.layers import roi_sampler
from official.vision.ops import box_ops

from keras_relnet.garden.layers import RelationDetectionHead


class RelationMaskRCNNModel(maskrcnn_model.MaskRCNNModel):
    """`MaskRCNNModel` that passes the RoI boxes and a key mask to its box heads."""

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
        class_outputs, box_outputs = self.detection_head[cascade_num](
            roi_features, rois=rois, roi_mask=relation_keys(rois, matched_gt_boxes),
            training=training)
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
    return RelationMaskRCNNModel(**components)
