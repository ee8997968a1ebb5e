"""keras_relnet.garden: the tf_keras layers train and regularise in Model Garden's
backbones (their equality with the Keras 3 layers is `test_two_fronts.py`); the
backbones build and train in Model Garden's image-classification task; config errors
are clear."""

import glob
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from imagenet_shards import CLASSES, write_colour_shards
from keras_relnet import layers as keras3_layers
from keras_relnet.applications.layer_kit import KERAS_KIT
from keras_relnet.applications.lrnet import lrnet_endpoints
from keras_relnet.applications.resnet import resnet_endpoints
from keras_relnet.garden import Backbone, LRNetBackbone, RelationBackbone
from keras_relnet.garden import layers as garden_layers
from keras_relnet.garden.backbones import garden_kit
from official.core import exp_factory, task_factory, train_lib
from official.vision.configs import common
from official.vision.modeling.backbones import factory

def perturbed(weights, seed=0):
    rng = np.random.default_rng(seed)
    return [w + rng.normal(size=w.shape).astype("float32") * 0.1 for w in weights]


def test_tf_keras_layers_train_under_mirrored_strategy(two_cpu_strategy):
    with two_cpu_strategy.scope():
        inputs = tf_keras.Input((8, 8, 16))
        x = garden_layers.LocalRelation2D(kernel_size=3, channels_per_group=4)(inputs)
        x = garden_layers.GlobalContext(ratio=1 / 4)(x)
        outputs = tf_keras.layers.Dense(2)(tf_keras.layers.GlobalAveragePooling2D()(x))
        model = tf_keras.Model(inputs, outputs)
        model.compile(tf_keras.optimizers.SGD(0.1), tf_keras.losses.MeanSquaredError())
    before = [w.numpy() for w in model.trainable_weights]
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(16, 8, 8, 16)).astype("float32"),
                        rng.normal(size=(16, 2)).astype("float32"), batch_size=8, epochs=2,
                        verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for start, weight in zip(before, model.trainable_weights):
        if "attention_bias" in weight.name:  # softmax ignores a shared shift: no gradient
            continue
        assert not np.array_equal(start, weight.numpy()), weight.name


def test_tf_keras_layer_rejects_bad_options_like_the_keras3_layer():
    with pytest.raises(ValueError, match="kernel_size"):
        garden_layers.LocalRelation2D(kernel_size=4)
    with pytest.raises(ValueError, match="channels_per_group"):
        garden_layers.LocalRelation2D(channels_per_group=3)(tf.ones((1, 4, 4, 8)))


def test_backbone_regularises_every_relation_and_context_kernel():
    backbone = RelationBackbone("resnet_context", 26, tf_keras.layers.InputSpec(
        shape=[None, 64, 64, 3]), kit=garden_kit(l2_regularizer=tf_keras.regularizers.l2(1e-4)),
        context_block="gc")
    blocks = [layer for layer in backbone.layers if isinstance(layer, garden_layers.GlobalContext)]
    assert blocks
    for block in blocks:  # attention kernel and the two bottleneck kernels
        assert len(block.losses) == 3, block.name


@pytest.mark.parametrize("architecture, endpoints_of, options", [
    ("lrnet", lrnet_endpoints, dict(width_multiplier=0.25, context_block="gc")),
    ("resnet_context", resnet_endpoints, dict(context_block="se")),
])
def test_backbone_is_the_package_architecture(architecture, endpoints_of, options):
    # Seeded: the tolerance below holds for these weights whatever ran before (with
    # random BN statistics some initialisations amplify rounding past it).
    keras.utils.set_random_seed(0)
    backbone = RelationBackbone(architecture, 26, tf_keras.layers.InputSpec(
        shape=[None, 64, 64, 3]), **options)
    inputs = keras.Input((64, 64, 3))
    reference = keras.Model(inputs, {str(level): x for level, x in endpoints_of(
        inputs, KERAS_KIT, (2, 2, 2, 2), **options).items()})
    assert [w.shape for w in backbone.get_weights()] == [w.shape for w in reference.get_weights()]
    reference.set_weights(perturbed(reference.get_weights()))
    backbone.set_weights(reference.get_weights())
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    ours, theirs = backbone(images, training=False), reference(images, training=False)
    assert sorted(ours) == ["2", "3", "4", "5"]
    for level in ours:
        # Random BN statistics make activations in the thousands, and tf_keras'
        # fused BN rounds differently from Keras 3's: relative to the largest.
        difference = np.abs(np.asarray(ours[level]) - np.asarray(theirs[level])).max()
        assert difference <= 1e-3 * np.abs(np.asarray(theirs[level])).max(), level
    assert {level: spec.as_list()[1:3] for level, spec in backbone.output_specs.items()} == {
        "2": [16, 16], "3": [8, 8], "4": [4, 4], "5": [2, 2]}


def test_registered_builder_uses_norm_activation_and_l2():
    config = Backbone(type="lrnet", lrnet=LRNetBackbone(model_id=26, width_multiplier=0.125))
    norm = common.NormActivation(activation="swish", norm_momentum=0.97, norm_epsilon=1e-3)
    backbone = factory.build_backbone(tf_keras.layers.InputSpec(shape=[None, 32, 32, 3]),
                                      config, norm, tf_keras.regularizers.l2(1e-4))
    norms = [layer for layer in backbone.layers
             if isinstance(layer, tf_keras.layers.BatchNormalization)]
    assert norms and all(n.momentum == 0.97 and n.epsilon == 1e-3 for n in norms)
    activations = {layer.activation.__name__ for layer in backbone.layers
                   if isinstance(layer, tf_keras.layers.Activation)}
    assert activations == {"swish"}
    regularized = [layer for layer in backbone.layers if isinstance(
        layer, (tf_keras.layers.Conv2D, garden_layers.LocalRelation2D))]
    assert len(backbone.losses) == sum(
        1 if isinstance(layer, tf_keras.layers.Conv2D) else 3 for layer in regularized)


@pytest.mark.parametrize("override, message", [
    ({"lrnet": {"model_id": 27}}, r"task.model.backbone.lrnet.model_id must be one of"),
    ({"lrnet": {"context_block": "xx"}}, r"task.model.backbone.lrnet: `context_block`"),
    ({"lrnet": {"kernel_size": 4}}, r"task.model.backbone.lrnet: `kernel_size`"),
    ({"lrnet": {"context_block": "gc", "context_stages": [6]}},
     r"task.model.backbone.lrnet: `context_stages`"),
])
def test_bad_backbone_options_fail_at_config_validation(override, message):
    config = exp_factory.get_exp_config("lrnet50_imagenet")
    config.override({"task": {"model": {"backbone": override}}})
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_unknown_backbone_option_fails_at_override():
    config = exp_factory.get_exp_config("gc_resnet50_imagenet")
    with pytest.raises(KeyError, match="'ratio' does not exist"):
        config.override({"task": {"model": {"backbone": {"resnet_context": {"ratio": 4}}}}})


def test_imagenet_experiments_have_the_recipe():
    for name, backbone in (("lrnet50_imagenet", "lrnet"),
                           ("gc_resnet50_imagenet", "resnet_context")):
        config = exp_factory.get_exp_config(name)
        config.validate()
        assert config.task.model.backbone.type == backbone
        assert config.task.losses.label_smoothing == 0.1
        assert config.task.losses.l2_weight_decay == 1e-4
        learning_rate = config.trainer.optimizer_config.learning_rate
        assert learning_rate.type == "cosine" and learning_rate.cosine.initial_learning_rate == 0.1
        assert config.trainer.optimizer_config.optimizer.sgd.momentum == 0.9
        assert config.trainer.optimizer_config.warmup.linear.warmup_steps == 5 * 5004
    assert exp_factory.get_exp_config("gc_resnet50_imagenet").task.model.backbone \
        .resnet_context.context_block == "gc"


def training_losses(model_dir):
    losses = []
    for path in sorted(glob.glob(f"{model_dir}/train/events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "training_loss":
                    losses.append(float(tf.make_ndarray(value.tensor)))
    return losses


@pytest.mark.parametrize("experiment, backbone, learning_rate", [
    ("lrnet50_imagenet", {"lrnet": {"model_id": 26, "width_multiplier": 0.125}}, 0.01),
    ("gc_resnet50_imagenet", {"resnet_context": {"model_id": 26}}, 0.001),
])
def test_backbone_trains_in_the_image_classification_task(experiment, backbone, learning_rate,
                                                          tmp_path):
    data_dir = tmp_path / "data"
    write_colour_shards(data_dir)
    params = exp_factory.get_exp_config(experiment)
    params.override({
        "runtime": {"distribution_strategy": "one_device", "num_gpus": 0,
                    "mixed_precision_dtype": "float32"},
        "task": {"init_checkpoint": "",
                 "model": {"num_classes": CLASSES + 1, "input_size": [32, 32, 3],
                           "backbone": backbone},
                 "train_data": {"input_path": f"{data_dir}/train-*", "global_batch_size": 8,
                                "dtype": "float32", "shuffle_buffer_size": 16},
                 "validation_data": {"input_path": f"{data_dir}/validation-*",
                                     "global_batch_size": 8, "dtype": "float32"}},
        "trainer": {"train_steps": 24, "steps_per_loop": 4, "summary_interval": 4,
                    "checkpoint_interval": 24, "validation_steps": 3, "validation_interval": 24,
                    "optimizer_config": {
                        "learning_rate": {"type": "cosine",
                                          "cosine": {"initial_learning_rate": learning_rate,
                                                     "decay_steps": 24}},
                        "warmup": {"linear": {"warmup_steps": 2}}}},
    })
    params.validate()
    params.lock()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=str(tmp_path))
    model, logs = train_lib.run_experiment(
        distribution_strategy=strategy, task=task, mode="train_and_eval", params=params,
        model_dir=str(tmp_path), run_post_eval=True)
    assert isinstance(model.backbone, RelationBackbone)
    assert {"accuracy", "top_5_accuracy", "validation_loss"} <= set(logs)
    assert np.isfinite(float(logs["validation_loss"]))
    losses = training_losses(tmp_path)
    assert len(losses) == 6 and np.isfinite(losses).all()  # each the mean of 4 steps
    if experiment.startswith("lrnet"):
        # 8-image batches are noisy: the best later window beats the start, and the
        # zero-initialised last BN of every block (zero_init_residual) has moved.
        assert min(losses[3:]) < np.mean(losses[:2]), losses
        residual_norms = [layer for layer in model.backbone.layers
                          if isinstance(layer, tf_keras.layers.BatchNormalization)
                          and isinstance(layer.gamma_initializer, tf_keras.initializers.Zeros)]
        assert len(residual_norms) == 8  # LR-Net-26: 2 blocks in each of 4 stages
        assert all(np.abs(layer.gamma.numpy()).max() > 0 for layer in residual_norms)
    else:
        # ResNet-26 on 8-image batches is too noisy for a falling loss in 24 steps;
        # the GC blocks' zero-initialised last kernels moving shows they are trained.
        context = [layer for layer in model.backbone.layers
                   if isinstance(layer, garden_layers.GlobalContext)]
        assert len(context) == 6  # c3-c5 of ResNet-26
        last_kernels = [layer.family_weights.transforms["add"][4] for layer in context]
        assert all(np.abs(kernel.numpy()).max() > 0 for kernel in last_kernels)


def test_launcher_trains_an_experiment_with_model_garden_flags(tmp_path):
    data_dir = tmp_path / "data"
    write_colour_shards(data_dir)
    overrides = ",".join([
        "runtime.distribution_strategy=one_device", "runtime.num_gpus=0",
        "runtime.mixed_precision_dtype=float32", "task.init_checkpoint=''",
        f"task.model.num_classes={CLASSES + 1}", "task.model.input_size=[32,32,3]",
        "task.model.backbone.lrnet.model_id=26", "task.model.backbone.lrnet.width_multiplier=0.125",
        f"task.train_data.input_path={data_dir}/train-*", "task.train_data.global_batch_size=8",
        "task.train_data.dtype=float32", f"task.validation_data.input_path={data_dir}/validation-*",
        "task.validation_data.global_batch_size=8", "task.validation_data.dtype=float32",
        "trainer.train_steps=2", "trainer.steps_per_loop=1", "trainer.summary_interval=1",
        "trainer.checkpoint_interval=2", "trainer.validation_steps=1",
        "trainer.validation_interval=2"])
    result = subprocess.run(
        [sys.executable, "-m", "keras_relnet.garden.train", "--experiment=lrnet50_imagenet",
         "--mode=train_and_eval", f"--model_dir={tmp_path / 'run'}",
         f"--params_override={overrides}"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    params = (tmp_path / "run" / "params.yaml").read_text()
    assert "type: lrnet" in params and "width_multiplier: 0.125" in params
    assert glob.glob(str(tmp_path / "run" / "ckpt-2.index"))
