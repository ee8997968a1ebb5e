"""The ImageNet training recipe of LR-Net and GCNet, as Keras objects."""

import dataclasses

import keras

from keras_relnet.training.sgd import L2SGD


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Hyper-parameters of the standard ImageNet recipe (the papers' settings by default).

    SGD momentum 0.9, learning rate 0.1 per 256 images scaled linearly with the
    batch, 5-epoch linear warm-up then cosine decay to 0, weight decay 1e-4 on
    kernels only, label smoothing 0.1.

    Attributes:
        epochs: training epochs.
        global_batch_size: images per step over all replicas.
        base_learning_rate: learning rate per `reference_batch_size` images.
        reference_batch_size: batch size `base_learning_rate` refers to.
        warmup_epochs: epochs of linear warm-up from 0.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 coefficient on kernels (not BN or biases).
        label_smoothing: label smoothing of the cross-entropy.

    Example:
    >>> Recipe(global_batch_size=1024).learning_rate
    0.4
    """

    epochs: int = 100
    global_batch_size: int = 256
    base_learning_rate: float = 0.1
    reference_batch_size: int = 256
    warmup_epochs: float = 5
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1

    def __post_init__(self):
        for name in ("epochs", "global_batch_size", "reference_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; received {value!r}.")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(
                f"`warmup_epochs` must be in [0, epochs={self.epochs}]; received "
                f"{self.warmup_epochs}."
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1); received {self.label_smoothing}."
            )

    @property
    def learning_rate(self):
        """Peak learning rate: `base_learning_rate` scaled by the batch size."""
        return self.base_learning_rate * self.global_batch_size / self.reference_batch_size

    def schedule(self, steps_per_epoch):
        """Per-step learning rate: linear warm-up from 0, then cosine decay to 0.

        Args:
            steps_per_epoch: optimizer steps in one epoch.

        Returns:
            A `keras.optimizers.schedules.CosineDecay`.

        Example:
        >>> schedule = Recipe(epochs=10, warmup_epochs=2).schedule(100)
        >>> [round(float(schedule(step)), 4) for step in (0, 100, 200, 600, 1000)]
        [0.0, 0.05, 0.1, 0.05, 0.0]
        """
        warmup_steps = int(round(self.warmup_epochs * steps_per_epoch))
        decay_steps = max(1, self.epochs * steps_per_epoch - warmup_steps)
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(self.learning_rate, decay_steps)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps, warmup_target=self.learning_rate, warmup_steps=warmup_steps
        )

    def optimizer(self, steps_per_epoch):
        """SGD with momentum, the schedule and L2 on kernels."""
        return L2SGD(self.schedule(steps_per_epoch), momentum=self.momentum,
                     nesterov=self.nesterov, l2=self.weight_decay)

    def loss(self):
        """Cross-entropy of one-hot (or mixed) labels and softmax outputs, smoothed."""
        return keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)

    def compile(self, model, steps_per_epoch, jit_compile="auto"):
        """Compiles `model` with the recipe's optimizer, loss and top-1/top-5 metrics.

        Args:
            model: a classifier with softmax outputs.
            steps_per_epoch: optimizer steps in one epoch.
            jit_compile: passed to `model.compile`.
        """
        model.compile(optimizer=self.optimizer(steps_per_epoch), loss=self.loss(),
                      metrics=accuracy_metrics(), jit_compile=jit_compile)


def accuracy_metrics():
    """Top-1 and top-5 accuracy of one-hot (or soft: argmax) labels, named "top1"/"top5".

    Example:
    >>> [metric.name for metric in accuracy_metrics()]
    ['top1', 'top5']
    """
    return [
        keras.metrics.CategoricalAccuracy(name="top1"),
        keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"),
    ]
