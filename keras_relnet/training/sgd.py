"""SGD with momentum and L2 regularisation of the kernels (not of norms or biases)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_relnet")
class L2SGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` that adds `l2 * w` to the gradient of every kernel.

    This is the classic ImageNet weight decay: an L2 term in the loss, so the
    decay goes through the momentum (unlike Keras' decoupled `weight_decay`).
    Variables of rank < 2 (biases, BatchNorm and LayerNorm scales and offsets)
    are not decayed.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
        momentum: momentum of SGD.
        nesterov: use Nesterov momentum.
        l2: coefficient of the L2 term `l2 / 2 * |w|^2` (its gradient is `l2 * w`).
        name: optimizer name.
        **kwargs: other `keras.optimizers.Optimizer` arguments.

    Example:
    >>> optimizer = L2SGD(0.1, momentum=0.9, l2=1e-4)
    >>> optimizer.get_config()["l2"]
    0.0001
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, l2=0.0,
                 name="l2_sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum,
                         nesterov=nesterov, name=name, **kwargs)
        if l2 < 0:
            raise ValueError(f"`l2` must be >= 0; received {l2}.")
        self.l2 = l2

    def update_step(self, gradient, variable, learning_rate):
        if self.l2 and is_decayed(variable):
            gradient = ops.add(ops.cast(gradient, variable.dtype),
                               ops.multiply(variable, ops.cast(self.l2, variable.dtype)))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def is_decayed(variable):
    """Whether weight decay applies to `variable`: kernels yes, biases and norms no.

    Example:
    >>> is_decayed(keras.Variable(np.ones((3, 4)))), is_decayed(keras.Variable(np.ones(4)))
    (True, False)
    """
    return len(variable.shape) > 1
