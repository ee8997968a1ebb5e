"""Backup and resume at any step: weights, optimizer state and the step reached."""

import json
import os

import keras
import tensorflow as tf

from keras_relnet.training.strategies import is_chief

_WEIGHTS = "backup.weights.h5"  # model and optimizer variables
_STATE = "backup.json"


class StepBackup(keras.callbacks.Callback):
    """Saves the training state every `every_steps` steps and at every epoch end.

    Unlike `keras.callbacks.BackupAndRestore`, which restarts an interrupted
    epoch from its beginning, the saved step lets `restore` resume in the
    middle of an epoch (the ImageNet stream restarts at that step).

    Args:
        directory: where the backup is written (two files, each replaced by a
            rename); local or `gs://`.
        every_steps: steps between backups.
        step: the global step the run starts at (from `restore`).

    Example:
    >>> backup = StepBackup("/tmp/run/backup", every_steps=500)
    """

    def __init__(self, directory, every_steps=1000, step=0):
        super().__init__()
        if not isinstance(every_steps, int) or every_steps < 1:
            raise ValueError(f"`every_steps` must be a positive integer; received {every_steps!r}.")
        self.directory = os.fspath(directory)
        self.every_steps = every_steps
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every_steps == 0:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def save(self):
        """Writes the model and optimizer variables and the step reached."""
        if not is_chief():
            return
        # Written to temporary names, then renamed: a preemption while writing
        # leaves the previous backup whole. tf.io.gfile: gs:// works too.
        tf.io.gfile.makedirs(self.directory)
        weights = os.path.join(self.directory, _WEIGHTS)
        self.model.save_weights(weights + ".tmp.weights.h5")
        tf.io.gfile.rename(weights + ".tmp.weights.h5", weights, overwrite=True)
        state = os.path.join(self.directory, _STATE)
        with tf.io.gfile.GFile(state + ".tmp", "w") as file:
            file.write(json.dumps({"step": self.step}))
        tf.io.gfile.rename(state + ".tmp", state, overwrite=True)


def restore(model, directory):
    """Loads the latest backup in `directory` into the compiled `model`, if there is one.

    Args:
        model: the compiled model (built under the strategy scope).
        directory: the `StepBackup` directory.

    Returns:
        The global step to resume from (0 without a backup).
    """
    state = os.path.join(os.fspath(directory), _STATE)
    if not tf.io.gfile.exists(state):
        return 0
    with tf.io.gfile.GFile(state) as file:
        step = json.loads(file.read())["step"]
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(os.path.join(directory, _WEIGHTS))
    return step
