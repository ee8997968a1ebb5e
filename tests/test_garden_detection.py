"""Model Garden detection with the relation box head: head parity, tiny train_and_eval
runs on generated COCO-format TFRecords, config errors."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from coco_shards import write_detection_shards
from keras_relnet import layers as keras3_layers
from keras_relnet.garden import layers as garden_layers
from keras_relnet.garden.export import export_detection
from keras_relnet.garden.maskrcnn_model import RelationMaskRCNNModel, relation_keys
from official.core import exp_factory, task_factory, train_lib

TINY_DUPLICATE_REMOVAL = {"top_k": 8, "embedding_dim": 16, "rank_dim": 32, "num_heads": 2,
                          "key_dim": 8}

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("coco")
    write_detection_shards(directory / "train-00000-of-00001", 8, NUM_CLASSES, seed=0)
    write_detection_shards(directory / "val-00000-of-00001", 2, NUM_CLASSES, seed=1)
    return directory


def tiny_overrides(data_dir, mask=False):
    overrides = {
        "runtime": {"distribution_strategy": "one_device", "num_gpus": 0,
                    "mixed_precision_dtype": "float32", "enable_xla": False},
        "task": {
            "init_checkpoint": "", "annotation_file": "",
            "model": {"num_classes": NUM_CLASSES, "input_size": [128, 128, 3],
                      "norm_activation": {"use_sync_bn": False},
                      "rpn_head": {"num_filters": 32},
                      "decoder": {"fpn": {"num_filters": 32}},
                      "detection_head": {"num_filters": 32, "fc_dims": 64},
                      "roi_generator": {"pre_nms_top_k": 200, "num_proposals": 64,
                                        "test_pre_nms_top_k": 200, "test_num_proposals": 32},
                      "roi_sampler": {"num_sampled_rois": 32},
                      "detection_generator": {"pre_nms_top_k": 100, "max_num_detections": 10}},
            "train_data": {"input_path": f"{data_dir}/train-*", "global_batch_size": 2,
                           "dtype": "float32", "shuffle_buffer_size": 4,
                           "parser": {"max_num_instances": 8}},
            "validation_data": {"input_path": f"{data_dir}/val-*", "global_batch_size": 2,
                                "dtype": "float32", "num_examples": 2},
        },
        "trainer": {"train_steps": 6, "steps_per_loop": 2, "summary_interval": 2,
                    "checkpoint_interval": 6, "validation_steps": 1, "validation_interval": 6,
                    "optimizer_config": {"learning_rate": {"type": "constant",
                                                           "constant": {"learning_rate": 0.01}},
                                         "warmup": {"type": None}}},
    }
    if mask:
        overrides["task"]["model"].update(mask_head={"num_filters": 16, "num_convs": 1},
                                          mask_sampler={"num_sampled_masks": 8})
    return overrides


def run(experiment, overrides, model_dir, backbone=None):
    params = exp_factory.get_exp_config(experiment)
    params.override(overrides)
    if backbone is not None:
        params.override({"task": {"model": {"backbone": backbone}}})
    params.validate()
    params.lock()
    model_dir.mkdir(parents=True, exist_ok=True)  # Mask R-CNN eval writes annotation.json there
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=str(model_dir))
    return train_lib.run_experiment(distribution_strategy=strategy, task=task,
                                    mode="train_and_eval", params=params,
                                    model_dir=str(model_dir), run_post_eval=True)


def training_losses(model_dir, tag="total_loss"):
    losses = []
    for path in sorted(tf.io.gfile.glob(f"{model_dir}/train/events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            losses += [float(tf.make_ndarray(value.tensor)) for value in event.summary.value
                       if value.tag == tag]
    return losses


@pytest.mark.slow  # 3+ minutes; the default run builds the model and trains a step below
def test_relation_faster_rcnn_trains_and_evaluates_with_the_relation_head(coco_dir, tmp_path):
    backbone = {"type": "resnet", "resnet": {"model_id": 18}}
    model, logs = run("fasterrcnn_relation_resnetfpn_coco", tiny_overrides(coco_dir),
                      tmp_path, backbone)
    assert isinstance(model, RelationMaskRCNNModel)
    assert isinstance(model.detection_head[0], garden_layers.RelationDetectionHead)
    assert len(model.detection_head[0].relations) == 2
    assert {"AP", "AP50"} <= set(logs)
    losses = training_losses(tmp_path)
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses

    params = exp_factory.get_exp_config("fasterrcnn_relation_resnetfpn_coco")
    params.override(tiny_overrides(coco_dir))
    params.override({"task": {"model": {"backbone": backbone}}})
    saved_model = export_detection(params, str(tmp_path), str(tmp_path / "export"), [128, 128])
    loaded = tf.saved_model.load(saved_model)
    key = "detection_head/relation1/query_kernel:0"  # the relation head, not the stock one
    exported = [v for v in loaded.model.variables if v.name.endswith(key)]
    assert len(exported) == 1
    trained = next(v for v in model.variables if v.name.endswith(key))
    np.testing.assert_array_equal(exported[0].numpy(), trained.numpy())  # the checkpoint's
    image = tf.cast(tf.random.uniform((1, 128, 128, 3), 0, 255), tf.uint8)
    detections = loaded.signatures["serving_default"](inputs=image)
    assert {"detection_boxes", "detection_scores", "detection_classes",
            "num_detections"} <= set(detections)
    assert detections["detection_boxes"].shape == (1, 10, 4)


def e2e_overrides(data_dir):
    overrides = tiny_overrides(data_dir)
    overrides["task"]["model"]["duplicate_removal"] = TINY_DUPLICATE_REMOVAL
    return overrides


def test_end_to_end_step_trains_the_duplicate_removal_and_detects_without_nms(coco_dir):
    params = exp_factory.get_exp_config("fasterrcnn_relation_e2e_resnetfpn_coco")
    params.override(e2e_overrides(coco_dir))
    params.override({"task": {"model": {"backbone": {"type": "resnet",
                                                     "resnet": {"model_id": 18}}}}})
    params.validate()
    task = task_factory.get_task(params.task)
    model = task.build_model()
    assert isinstance(model.duplicate_removal, garden_layers.DuplicateRemoval)
    assert model.detection_generator.get_config()["apply_nms"] is False
    images, labels = next(iter(task.build_inputs(params.task.train_data)))
    optimizer = task.create_optimizer(params.trainer.optimizer_config, params.runtime)
    metrics = task.build_metrics(training=True)
    classifier = model.duplicate_removal.classifier.kernel
    before = classifier.numpy()
    task.train_step((images, labels), model, optimizer, metrics=metrics)
    losses = {m.name: float(m.result()) for m in metrics}
    assert np.isfinite(losses["duplicate_removal_loss"]) and losses["duplicate_removal_loss"] > 0
    assert np.any(classifier.numpy() != before)

    with tf.GradientTape() as tape:
        outputs = model(images, image_shape=labels["image_info"][:, 1, :],
                        anchor_boxes=labels["anchor_boxes"], gt_boxes=labels["gt_boxes"],
                        gt_classes=labels["gt_classes"], training=True)
        loss = task.build_losses(outputs, labels)["duplicate_removal_loss"]
    head = model.detection_head[0]
    variables = [*model.duplicate_removal.trainable_variables, head.classifier.kernel,
                 head.box_regressor.kernel]
    gradients = tape.gradient(loss, variables)
    assert all(g is not None for g in gradients[:-2])
    # End to end: the loss reaches the class scores (s0), not the box regression.
    assert np.abs(gradients[-2].numpy()).max() > 0 and gradients[-1] is None

    outputs = model(images, image_shape=labels["image_info"][:, 1, :],
                    anchor_boxes=labels["anchor_boxes"], training=False)
    # The stock decode-only generator gives no detections: these are the learned NMS's.
    assert "decoded_boxes" not in outputs
    assert outputs["detection_boxes"].shape == (2, 10, 4)
    scores, count = outputs["detection_scores"].numpy(), outputs["num_detections"].numpy()
    assert np.all(np.diff(scores, axis=1) <= 0) and np.all((scores > 0).sum(1) == count)
    classes = outputs["detection_classes"].numpy()
    assert np.all((classes[:, :count.min()] >= 1) & (classes[:, :count.min()] < NUM_CLASSES))


@pytest.mark.slow
def test_end_to_end_relation_faster_rcnn_trains_evaluates_and_exports(coco_dir, tmp_path):
    backbone = {"type": "resnet", "resnet": {"model_id": 18}}
    model, logs = run("fasterrcnn_relation_e2e_resnetfpn_coco", e2e_overrides(coco_dir),
                      tmp_path, backbone)
    assert model.duplicate_removal is not None and {"AP", "AP50"} <= set(logs)
    losses = training_losses(tmp_path)
    assert len(losses) == 3 and np.isfinite(losses).all() and losses[-1] < losses[0], losses
    # Its own loss need not fall: as the detector learns, more candidates reach the
    # IoU thresholds and become positives. It is logged, and its weights train.
    removal_losses = training_losses(tmp_path, "duplicate_removal_loss")
    assert len(removal_losses) == 3 and np.isfinite(removal_losses).all()
    bias = model.duplicate_removal.classifier.bias.numpy()
    assert np.abs(bias + 3.0).max() > 0  # moved from its initial value, -3

    params = exp_factory.get_exp_config("fasterrcnn_relation_e2e_resnetfpn_coco")
    params.override(e2e_overrides(coco_dir))
    params.override({"task": {"model": {"backbone": backbone}}})
    saved_model = export_detection(params, str(tmp_path), str(tmp_path / "export"), [128, 128])
    loaded = tf.saved_model.load(saved_model)
    assert any("duplicate_removal/relation/query_kernel" in v.name
               for v in loaded.model.variables)
    image = tf.cast(tf.random.uniform((1, 128, 128, 3), 0, 255), tf.uint8)
    detections = loaded.signatures["serving_default"](inputs=image)
    assert detections["detection_boxes"].shape == (1, 10, 4)


def test_duplicate_removal_under_mixed_bfloat16_keeps_scores_and_boxes_float32():
    options = dict(top_k=5, embedding_dim=16, rank_dim=32, num_heads=2, key_dim=4)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(1, 6, 8)).astype("float32")
    scores = rng.uniform(size=(1, 6, 2)).astype("float32")
    boxes = np.sort(rng.uniform(900, 1000, (1, 6, 2, 4)), -1).astype("float32")
    reference = garden_layers.DuplicateRemoval(**options)
    expected = reference(features, scores=scores, boxes=boxes)
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = garden_layers.DuplicateRemoval(**options)
        layer(features, scores=scores, boxes=boxes)
        layer.set_weights(reference.get_weights())
        outputs = layer(features, scores=scores, boxes=boxes)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert outputs["scores"].dtype == outputs["boxes"].dtype == tf.float32
    np.testing.assert_array_equal(outputs["boxes"], expected["boxes"])  # no bfloat16 rounding
    np.testing.assert_allclose(outputs["scores"], expected["scores"], atol=0.01)


def test_relation_keys_drop_padding_and_ground_truth_rois():
    rois = tf.constant([[[0.0, 0, 10, 10], [0, 0, 0, 0], [5, 5, 9, 9]]])
    np.testing.assert_array_equal(relation_keys(rois), [[True, False, True]])
    matched = tf.constant([[[0.0, 0, 12, 12], [0, 0, 0, 0], [5, 5, 9, 9]]])
    np.testing.assert_array_equal(relation_keys(rois, matched), [[True, False, False]])


@pytest.mark.parametrize("override, message", [
    ({"relation_head": {"num_relation_heads": 12}},
     r"task.model.relation_head \(fc_dim: task.model.detection_head.fc_dims, num_heads: "
     r"num_relation_heads\): `num_heads` \(12\) must divide the feature width of `fc_dim`; "
     r"received width 1024"),
    ({"input_size": [250, 250, 3]},
     r"task.model.input_size \[250, 250, 3\] must be a multiple of 2\*\*max_level = 64"),
    ({"detection_head": {"num_convs": 2}},
     r"task.model.detection_head.num_convs must be 0 with the relation head"),
    ({"backbone": {"type": "lrnet", "lrnet": {"model_id": 27}}},
     r"task.model.backbone.lrnet.model_id must be one of"),
    ({"duplicate_removal": {"num_heads": 12}},
     r"task.model.duplicate_removal: `num_heads` \(12\) must divide the feature width of "
     r"`embedding_dim`; received width 128"),
    ({"duplicate_removal": {"iou_thresholds": [0.5, 1.5]}},
     r"task.model.duplicate_removal: `iou_thresholds` must be a non-empty sequence"),
])
def test_bad_detection_config_fails_at_validation(override, message):
    config = exp_factory.get_exp_config("fasterrcnn_relation_e2e_resnetfpn_coco")
    config.override({"task": {"model": override}})
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_relation_experiment_has_the_paper_settings():
    config = exp_factory.get_exp_config("fasterrcnn_relation_resnetfpn_coco")
    model = config.task.model
    assert (model.detection_head.num_convs, model.detection_head.num_fcs,
            model.detection_head.fc_dims) == (0, 2, 1024)
    assert model.relation_head.num_relation_heads == 16
    assert model.roi_generator.test_num_proposals == 300
    assert not model.duplicate_removal.use_duplicate_removal
    learned_nms = exp_factory.get_exp_config(
        "fasterrcnn_relation_e2e_resnetfpn_coco").task.model.duplicate_removal
    assert learned_nms.use_duplicate_removal
    assert (learned_nms.top_k, learned_nms.num_heads, learned_nms.embedding_dim,
            learned_nms.rank_dim, learned_nms.positive_weight) == (150, 16, 128, 1024, 4.0)
    assert learned_nms.iou_thresholds == [0.5, 0.6, 0.7, 0.8, 0.9]
    gc = exp_factory.get_exp_config("maskrcnn_gc_resnetfpn_coco").task.model
    assert gc.include_mask and gc.backbone.type == "resnet_context"
    assert gc.backbone.resnet_context.context_block == "gc"
    lrnet = exp_factory.get_exp_config("maskrcnn_lrnet_fpn_coco").task.model
    assert lrnet.backbone.type == "lrnet" and lrnet.backbone.lrnet.model_id == 50


@pytest.mark.slow
@pytest.mark.parametrize("experiment, backbone", [
    ("maskrcnn_gc_resnetfpn_coco",
     {"type": "resnet_context", "resnet_context": {"model_id": 26}}),
    ("maskrcnn_lrnet_fpn_coco",
     {"type": "lrnet", "lrnet": {"model_id": 26, "width_multiplier": 0.25}}),
])
def test_mask_rcnn_with_relation_backbones_trains_and_evaluates(experiment, backbone, coco_dir,
                                                                tmp_path):
    _, logs = run(experiment, tiny_overrides(coco_dir, mask=True), tmp_path, backbone)
    assert {"AP", "mask_AP"} <= set(logs)
    assert np.isfinite(training_losses(tmp_path)).all()


def test_object_relation_rejects_heads_not_dividing_the_width():
    with pytest.raises(ValueError, match=r"`num_heads` \(3\) must divide the feature width"):
        garden_layers.ObjectRelation(num_heads=3)(tf.ones([1, 3, 32]), boxes=tf.ones([1, 3, 4]))
