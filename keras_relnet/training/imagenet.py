"""`model.fit` on ImageNet with the recipe, a strategy, checkpoints, logs and resume."""

import contextlib
import os

import keras

from keras_relnet.applications.registry import build_model
from keras_relnet.training import resume
from keras_relnet.training.recipe import Recipe, accuracy_metrics
from keras_relnet.training.strategies import make_strategy

PRECISIONS = {None: "float32", "float32": "float32", "float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16", "mixed_float16": "mixed_float16",
              "mixed_bfloat16": "mixed_bfloat16"}


def train_imagenet(model, data, recipe=None, model_dir="imagenet_run", strategy=None,
                   mixed_precision=None, steps_per_epoch=None, validation=True,
                   backup_every_steps=1000, jit_compile="auto", callbacks=(), verbose="auto",
                   **model_kwargs):
    """Trains a classifier on ImageNet; a rerun with the same `model_dir` resumes.

    Writes to `model_dir`: `backup/` (state every `backup_every_steps` steps),
    `last.keras` (every epoch), `best.keras` (best validation top-1),
    `logs/` (TensorBoard) and `training_log.csv`.

    Args:
        model: a package model name (e.g. "lrnet50") or a function returning an
            uncompiled `keras.Model` with softmax outputs (called in the
            strategy scope).
        data: a `keras_relnet.data.ImageNet`.
        recipe: a `Recipe` (default: the papers' recipe).
        model_dir: output directory.
        strategy: a `tf.distribute.Strategy` (default: `make_strategy("auto")`).
        mixed_precision: None/"float32", "float16" or "bfloat16".
        steps_per_epoch: default: the training examples over the global batch.
        validation: evaluate on the validation split after every epoch.
        backup_every_steps: steps between backups.
        jit_compile: passed to `model.compile`.
        callbacks: more Keras callbacks.
        verbose: passed to `model.fit`.
        **model_kwargs: more arguments of a package model (e.g. `width_multiplier`;
            None keeps the model's default).

    Returns:
        `(model, history)`: the trained model and a dict of per-epoch logs of
        the epochs this call ran.

    Example:
    >>> data = ImageNet("/data/imagenet")  # doctest: +SKIP
    >>> model, history = train_imagenet("lrnet50", data, Recipe(epochs=100))  # doctest: +SKIP
    """
    recipe = recipe or Recipe()
    strategy = strategy or make_strategy("auto")
    steps_per_epoch = steps_per_epoch or data.steps_per_epoch(recipe.global_batch_size)
    with _precision(mixed_precision), strategy.scope():
        model = _build(model, data, model_kwargs)
        recipe.compile(model, steps_per_epoch, jit_compile)
        step = resume.restore(model, os.path.join(model_dir, "backup"))
    callbacks = [
        resume.StepBackup(os.path.join(model_dir, "backup"), backup_every_steps, step),
        *_checkpoints(model_dir, validation),
        keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(model_dir, "training_log.csv"), append=True),
        *callbacks,
    ]
    validation_data = data.validation(recipe.global_batch_size) if validation else None
    history = {}
    files = data.files("train") + (data.files("validation") if validation else [])
    with data.readable_errors(files):
        for first_step, first_epoch, end_epoch, steps in fit_phases(
                step, steps_per_epoch, recipe.epochs):
            train_data = strategy.distribute_datasets_from_function(
                lambda context, first_step=first_step: data.train(
                    recipe.global_batch_size, first_step, context))
            fit = model.fit(train_data, epochs=end_epoch, initial_epoch=first_epoch,
                            steps_per_epoch=steps, validation_data=validation_data,
                            callbacks=callbacks, verbose=verbose, shuffle=False)
            for name, values in fit.history.items():
                history.setdefault(name, []).extend(values)
    return model, history


def evaluate_imagenet(model, data, batch_size=256, verbose="auto"):
    """Top-1, top-5 and cross-entropy of `model` on the validation split.

    Args:
        model: a `keras.Model` with softmax outputs.
        data: a `keras_relnet.data.ImageNet`.
        batch_size: global evaluation batch.
        verbose: passed to `model.evaluate`.

    Returns:
        A dict with "top1", "top5", "loss" and "examples".

    Example:
    >>> evaluate_imagenet(keras.models.load_model("best.keras"), data)  # doctest: +SKIP
    {'loss': 0.96, 'top1': 0.773, 'top5': 0.935, 'examples': 50000}
    """
    files = data.files("validation")
    # A fresh compile: the model's own may have another loss or no metrics.
    evaluated = keras.Model(model.inputs, model.outputs)
    evaluated.compile(loss=keras.losses.CategoricalCrossentropy(), metrics=accuracy_metrics())
    with data.readable_errors(files):
        results = evaluated.evaluate(data.validation(batch_size), return_dict=True,
                                     verbose=verbose)
    return {**results, "examples": data.examples("validation")}


def fit_phases(step, steps_per_epoch, epochs):
    """The `model.fit` calls that train from global `step` to the end of `epochs`.

    A run resumed in the middle of an epoch first finishes that epoch (a
    shorter `fit`), then runs the whole epochs left.

    Args:
        step: global step reached (0 for a new run).
        steps_per_epoch: steps in one epoch.
        epochs: epochs of the whole run.

    Returns:
        A list of `(first_step, initial_epoch, epochs, steps_per_epoch)`.

    Example:
    >>> fit_phases(0, 10, 3)
    [(0, 0, 3, 10)]
    >>> fit_phases(14, 10, 3)
    [(14, 1, 2, 6), (20, 2, 3, 10)]
    """
    epoch, offset = divmod(step, steps_per_epoch)
    phases = []
    if offset and epoch < epochs:
        phases.append((step, epoch, epoch + 1, steps_per_epoch - offset))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch * steps_per_epoch, epoch, epochs, steps_per_epoch))
    return phases


def _build(model, data, model_kwargs):
    if callable(model):
        model = model()
    else:
        given = {name: value for name, value in model_kwargs.items() if value is not None}
        model = build_model(model, input_shape=(data.image_size, data.image_size, 3),
                            classes=data.num_classes, **given)
    output_dtype = keras.backend.standardize_dtype(model.outputs[0].dtype)
    if output_dtype != "float32":
        raise ValueError(
            f"The model outputs {output_dtype}; under mixed precision its last layer must "
            "compute in float32 (e.g. `Dense(..., dtype=\"float32\")`), as the package "
            "models do, for a stable loss and the top-k metrics."
        )
    return model


def _checkpoints(model_dir, validation):
    last = keras.callbacks.ModelCheckpoint(os.path.join(model_dir, "last.keras"))
    if not validation:
        return [last]
    best = keras.callbacks.ModelCheckpoint(
        os.path.join(model_dir, "best.keras"), monitor="val_top1", mode="max",
        save_best_only=True)
    return [last, best]


@contextlib.contextmanager
def _precision(name):
    if name not in PRECISIONS:
        raise ValueError(
            f"`mixed_precision` must be one of {sorted(p for p in PRECISIONS if p)} or "
            f"None; received {name!r}."
        )
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(PRECISIONS[name])
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
