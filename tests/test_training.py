"""keras_relnet.training: the recipe, L2 SGD, metrics, model.fit, resume, Mirrored."""

import csv
import json
import math
import os
import pathlib
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from imagenet_shards import CLASSES, write_colour_shards
from keras_relnet.cli import main
from keras_relnet.data import ImageNet
from keras_relnet.layers import GlobalContext, LocalRelation2D
from keras_relnet.training import (
    L2SGD,
    Recipe,
    accuracy_metrics,
    evaluate_imagenet,
    make_strategy,
    train_imagenet,
)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("imagenet")
    write_colour_shards(directory, train=64, validation=24)
    return directory


def colour_data(directory, **options):
    return ImageNet(str(directory), image_size=32, num_classes=CLASSES, shuffle_buffer=64,
                    **options)


def tiny_classifier(batch_norm=True):
    """A conv stem, a local relation layer and a GC block: seconds per epoch."""
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = LocalRelation2D(kernel_size=3, channels_per_group=4, strides=2)(x)
    x = GlobalContext(ratio=1 / 4)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # Mixed precision: the classifier in float32, as Keras recommends.
    outputs = keras.layers.Dense(CLASSES, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def test_schedule_is_linear_warmup_then_cosine_with_linear_scaling():
    recipe = Recipe(epochs=10, global_batch_size=512, warmup_epochs=2)
    schedule = recipe.schedule(steps_per_epoch=50)
    peak = 0.1 * 512 / 256
    for step in (0, 25, 50, 99):
        assert float(schedule(step)) == pytest.approx(peak * step / 100, rel=1e-5, abs=1e-7)
    for step in (100, 300, 450, 500):
        expected = 0.5 * peak * (1 + math.cos(math.pi * (step - 100) / 400))
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    no_warmup = Recipe(epochs=2, warmup_epochs=0).schedule(10)
    assert float(no_warmup(0)) == pytest.approx(0.1)


def test_l2_goes_through_momentum_on_kernels_only():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.BatchNormalization()])
    optimizer = L2SGD(0.5, momentum=0.9, l2=0.01)
    optimizer.build(model.trainable_variables)
    before = [v.numpy() for v in model.trainable_variables]
    gradients = [np.full(v.shape, 0.2, "float32") for v in model.trainable_variables]
    for _ in range(2):
        optimizer.apply(gradients, model.trainable_variables)
    for variable, start, gradient in zip(model.trainable_variables, before, gradients):
        l2 = 0.01 if variable.path.endswith("kernel") else 0.0
        weights, velocity = start.copy(), np.zeros_like(start)
        for _ in range(2):  # Keras SGD: v = 0.9 v - lr g; w += v
            velocity = 0.9 * velocity - 0.5 * (gradient + l2 * weights)
            weights = weights + velocity
        np.testing.assert_allclose(variable.numpy(), weights, rtol=1e-6, atol=1e-7)


def test_l2_sgd_round_trips_through_a_keras_file(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(Recipe(epochs=3, warmup_epochs=1).optimizer(10), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.optimizer, L2SGD) and loaded.optimizer.l2 == 1e-4
    assert int(loaded.optimizer.iterations) == 1


def test_top1_and_top5_match_numpy():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=200).astype("float32")
    labels = rng.integers(0, 10, 200)
    ranks = (probabilities > probabilities[np.arange(200), labels][:, None]).sum(axis=1)
    top1, top5 = accuracy_metrics()
    for metric in (top1, top5):
        metric.update_state(np.eye(10)[labels], probabilities)
    assert float(top1.result()) == pytest.approx(np.mean(ranks < 1))
    assert float(top5.result()) == pytest.approx(np.mean(ranks < 5))
    assert 0 < np.mean(ranks < 1) < np.mean(ranks < 5) < 1


def test_fit_on_an_easy_task_lowers_the_loss_and_raises_accuracy(shard_dir, tmp_path):
    keras.utils.set_random_seed(0)
    recipe = Recipe(epochs=4, global_batch_size=16, warmup_epochs=1, base_learning_rate=0.4)
    model, history = train_imagenet("lrnet26", colour_data(shard_dir), recipe,
                                    model_dir=tmp_path, width_multiplier=0.125, verbose=0)
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert history["top1"][-1] > history["top1"][0] and history["val_top1"][-1] >= 0.9
    assert all(1.0 >= top5 >= top1 for top1, top5 in zip(history["top1"], history["top5"]))
    assert {"best.keras", "last.keras", "training_log.csv", "logs", "backup"} <= {
        path.name for path in tmp_path.iterdir()}
    with open(tmp_path / "training_log.csv") as log:
        assert [int(row["epoch"]) for row in csv.DictReader(log)] == [0, 1, 2, 3]
    best = keras.models.load_model(tmp_path / "best.keras")
    results = evaluate_imagenet(best, colour_data(shard_dir), batch_size=8, verbose=0)
    assert results["examples"] == 24 and results["top1"] == pytest.approx(
        max(history["val_top1"]), abs=1e-6)


class Preempted(Exception):
    pass


class PreemptAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            raise Preempted(f"preempted after step {self.step}")


def test_a_run_interrupted_mid_epoch_resumes_and_ends_with_the_same_weights(shard_dir, tmp_path):
    recipe = Recipe(epochs=3, global_batch_size=16, warmup_epochs=1, base_learning_rate=0.4)
    data = colour_data(shard_dir)
    common = dict(validation=False, backup_every_steps=2, verbose=0)

    keras.utils.set_random_seed(0)
    uninterrupted, _ = train_imagenet(tiny_classifier, data, recipe, tmp_path / "a", **common)

    keras.utils.set_random_seed(0)
    with pytest.raises(Preempted):  # after step 7 of 12; the last backup is at step 6
        train_imagenet(tiny_classifier, data, recipe, tmp_path / "b",
                       callbacks=[PreemptAt(7)], **common)
    keras.utils.set_random_seed(1)  # a different initialisation, replaced by the backup
    steps = []
    resumed, history = train_imagenet(
        tiny_classifier, data, recipe, tmp_path / "b",
        callbacks=[keras.callbacks.LambdaCallback(
            on_train_batch_begin=lambda batch, logs: steps.append(batch))], **common)
    assert steps == [0, 1] + [0, 1, 2, 3]  # the rest of epoch 1, then epoch 2
    assert len(history["loss"]) == 2
    assert int(resumed.optimizer.iterations) == int(uninterrupted.optimizer.iterations) == 12
    for ours, theirs in zip(resumed.weights, uninterrupted.weights):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=ours.path)
    for ours, theirs in zip(resumed.optimizer.variables, uninterrupted.optimizer.variables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


def test_a_finished_run_rerun_trains_no_more(shard_dir, tmp_path):
    recipe = Recipe(epochs=1, global_batch_size=32, warmup_epochs=0)
    common = dict(validation=False, verbose=0)
    train_imagenet(tiny_classifier, colour_data(shard_dir), recipe, tmp_path, **common)
    model, history = train_imagenet(tiny_classifier, colour_data(shard_dir), recipe, tmp_path,
                                     **common)
    assert history == {} and int(model.optimizer.iterations) == 2


def test_mirrored_on_two_devices_follows_the_one_device_loss_trajectory(shard_dir, tmp_path,
                                                                       two_cpu_strategy):
    recipe = Recipe(epochs=2, global_batch_size=16, warmup_epochs=1, base_learning_rate=0.4)
    trajectories = {}
    for name, strategy in (("one", make_strategy("one_device")),
                           ("mirrored", two_cpu_strategy)):
        losses = []
        keras.utils.set_random_seed(0)
        # No BatchNorm: its statistics are per replica under MirroredStrategy.
        train_imagenet(lambda: tiny_classifier(batch_norm=False), colour_data(shard_dir),
                       recipe, tmp_path / name, strategy=strategy, validation=False, verbose=0,
                       callbacks=[keras.callbacks.LambdaCallback(
                           on_train_batch_end=lambda batch, logs: losses.append(logs["loss"]))])
        trajectories[name] = losses
    assert len(trajectories["one"]) == 8
    np.testing.assert_allclose(trajectories["mirrored"], trajectories["one"], rtol=1e-4)
    assert trajectories["one"][-1] < trajectories["one"][0]


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_training_keeps_float32_weights_and_finite_loss(precision, shard_dir,
                                                                         tmp_path):
    recipe = Recipe(epochs=1, global_batch_size=32, warmup_epochs=0)
    model, history = train_imagenet(tiny_classifier, colour_data(shard_dir), recipe, tmp_path,
                                    mixed_precision=precision, validation=False, verbose=0)
    assert model.layers[1].compute_dtype == precision
    assert all(weight.dtype == "float32" for weight in model.trainable_weights)
    assert np.isfinite(history["loss"]).all()
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


def test_mixed_precision_needs_float32_outputs(shard_dir, tmp_path):
    def float16_outputs():
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(x))

    with pytest.raises(ValueError, match="outputs float16; under mixed precision"):
        train_imagenet(float16_outputs, colour_data(shard_dir),
                       Recipe(epochs=1, global_batch_size=16, warmup_epochs=0), tmp_path,
                       mixed_precision="float16")


def test_multi_worker_strategy_from_tf_config_trains(shard_dir, tmp_path):
    with socket.socket() as free:
        free.bind(("localhost", 0))
        port = free.getsockname()[1]
    config = {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}}
    result = subprocess.run(
        [sys.executable, str(pathlib.Path(__file__).with_name("multi_worker_run.py")),
         str(shard_dir), str(tmp_path)],
        env={**os.environ, "TF_CONFIG": json.dumps(config),
             "PYTHONPATH": str(pathlib.Path(__file__).parent)},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads(result.stdout.strip().splitlines()[-1])
    assert history["replicas"] == 1 and len(history["loss"]) == 2
    assert np.isfinite(history["loss"]).all() and "val_top1" in history
    assert (tmp_path / "last.keras").is_file()


def test_strategy_errors():
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        make_strategy("horovod")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")


@pytest.mark.parametrize("options, message", [
    (dict(epochs=0), "`epochs` must be a positive integer"),
    (dict(epochs=3, warmup_epochs=5), "`warmup_epochs` must be in"),
    (dict(label_smoothing=1.0), "`label_smoothing` must be in"),
])
def test_bad_recipe(options, message):
    with pytest.raises(ValueError, match=message):
        Recipe(**options)


def test_command_line_trains_resumes_and_evaluates(shard_dir, tmp_path, capsys):
    arguments = ["--data-dir", str(shard_dir), "--classes", str(CLASSES), "--image-size", "32",
                 "--batch-size", "16"]
    # One epoch with the default warm-up (5 epochs, capped at --epochs).
    train = ["train-imagenet", "--model", "lrnet26", "--width-multiplier", "0.125",
             *arguments, "--model-dir", str(tmp_path), "--epochs", "1", "--shuffle-buffer", "64"]
    assert main(train) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"loss", "top1", "top5", "val_top1", "val_top5"} <= set(final)
    assert main(["evaluate", "--model", str(tmp_path / "last.keras"), *arguments]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["examples"] == 24 and results["top1"] == pytest.approx(final["val_top1"])
    # Rerunning the finished run says so (it once printed "{}").
    assert main(train) == 0
    assert "has already trained all 1 epochs; nothing to do" in capsys.readouterr().out


def test_every_train_imagenet_option_has_help_and_says_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train-imagenet", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--epochs EPOCHS epochs of the schedule (default: 100)",
                  "--classes CLASSES classifier size (default: 1000)",
                  "--seed SEED seed of the weights, the shuffling and the augmentations "
                  "(default: 0)"):
        assert shown in text


@pytest.mark.parametrize("arguments, message", [
    (["--data-dir", "/no/such/dir"], "`data_dir` /no/such/dir does not exist"),
    (["--classes", "3"], "label 4 of record"),
])
def test_command_line_data_errors_exit_with_the_message(arguments, message, shard_dir, tmp_path,
                                                        capsys):
    defaults = {"--data-dir": str(shard_dir), "--classes": str(CLASSES)}
    defaults.update(dict(zip(arguments[::2], arguments[1::2])))
    with pytest.raises(SystemExit) as exit_info:
        main(["train-imagenet", "--model", "lrnet26", "--width-multiplier", "0.125",
              "--image-size", "32", "--batch-size", "16", "--epochs", "1", "--warmup-epochs", "0",
              "--model-dir", str(tmp_path), *sum(map(list, defaults.items()), [])])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_input_is_float32_images_for_the_distributed_dataset(shard_dir):
    strategy = make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    data = colour_data(shard_dir)
    batch = next(iter(strategy.distribute_datasets_from_function(
        lambda context: data.train(16, input_context=context))))
    images = strategy.experimental_local_results(batch[0])
    assert [image.dtype for image in images] == [tf.float32, tf.float32]


def test_a_saved_run_loads_after_import_keras_relnet_alone(tmp_path):
    # `keras.models.load_model("runs/x/best.keras")` once failed with "Could
    # not locate class 'L2SGD'" unless keras_relnet.training was imported.
    from keras_relnet.tracking import masked_binary_crossentropy

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(Recipe(epochs=3, warmup_epochs=1).optimizer(10), masked_binary_crossentropy)
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    model.save(tmp_path / "best.keras")
    script = ("import keras, keras_relnet\n"
              f"model = keras.models.load_model({str(tmp_path / 'best.keras')!r})\n"
              "print(type(model.optimizer).__name__, model.loss.__name__)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["L2SGD", "masked_binary_crossentropy"]
