"""One contract for the layers that have two fronts (Keras 3 and tf_keras).

`run_front_contract(case)` checks, like Keras' `run_layer_test` but on both
fronts at once, that a family's two layers are one computation:

- the same weights (names, shapes, order) give the same outputs;
- the same gradients, for the differentiable inputs and every weight;
- the same regularisation losses, and those are not zero;
- `from_config(get_config())` rebuilds each front with the same config and
  the same outputs;
- under each mixed precision policy, each front computes in the compute
  dtype, keeps float32 weights and stays close to its float32 outputs.
"""

import dataclasses
from typing import Callable, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
import tf_keras

MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
L2 = 0.01


@dataclasses.dataclass
class FrontCase:
    """A layer with two fronts, and inputs to run them on.

    Attributes:
        keras3: makes the Keras 3 layer from keyword arguments.
        garden: makes the tf_keras layer from keyword arguments.
        options: the keyword arguments of both fronts.
        inputs: NumPy arrays, in the order of the Keras 3 `call`.
        garden_call: calls the tf_keras layer on `inputs` (default: positionally).
        garden_options: the tf_keras front's keyword arguments, where its
            names differ (None: `options`).
        differentiable: indices of the inputs whose gradients are compared.
        mixed_output: picks the output that must be in the compute dtype
            (None: every output keeps float32, e.g. scores).
    """

    keras3: Callable
    garden: Callable
    options: dict
    inputs: Tuple[np.ndarray, ...]
    garden_call: Optional[Callable] = None
    garden_options: Optional[dict] = None
    differentiable: Tuple[int, ...] = (0,)
    mixed_output: Optional[Callable] = lambda outputs: tf.nest.flatten(outputs)[0]


class _Front:
    """One front of a case: how to make and call its layer."""

    def __init__(self, case, garden):
        self.garden = garden
        self.case = case
        own = case.garden_options if garden else None
        self.options = case.options if own is None else own
        self.make = case.garden if garden else case.keras3
        self.regularizer = (tf_keras.regularizers.l2(L2) if garden else keras.regularizers.L2(L2))
        self.policies = tf_keras.mixed_precision if garden else keras.mixed_precision

    def layer(self, **extra):
        return self.make(**self.options, kernel_regularizer=self.regularizer, **extra)

    def __call__(self, layer, inputs):
        if self.garden and self.case.garden_call is not None:
            return self.case.garden_call(layer, *inputs)
        return layer(*inputs)


def _floats(outputs):
    return [t for t in tf.nest.flatten(outputs) if t.dtype.is_floating]


def _randomised(layer, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=w.shape).astype(w.dtype) * scale for w in layer.get_weights()]


def _base_name(variable):
    return variable.name.split("/")[-1].split(":")[0]


def _loss_and_gradients(front, layer, inputs, upstream):
    tensors = [tf.convert_to_tensor(x) for x in inputs]
    watched = [tensors[i] for i in front.case.differentiable]
    with tf.GradientTape() as tape:
        tape.watch(watched)
        outputs = front(layer, tensors)
        loss = tf.add_n([tf.reduce_sum(tf.cast(t, tf.float64) * u)
                         for t, u in zip(_floats(outputs), upstream)])
    gradients = tape.gradient(loss, watched + list(layer.trainable_weights))
    return outputs, gradients, float(tf.add_n(layer.losses))


def _assert_close(got, want, message, rtol=1e-4, atol=1e-5):
    for index, (a, b) in enumerate(zip(tf.nest.flatten(got), tf.nest.flatten(want))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol,
                                   err_msg=f"{message}, output {index}")


def run_front_contract(case):
    """Runs the two-front contract on `case` (see the module docstring).

    Args:
        case: a `FrontCase`.
    """
    keras3, garden = _Front(case, garden=False), _Front(case, garden=True)
    layers = {keras3: keras3.layer(), garden: garden.layer()}
    for front, layer in layers.items():
        front(layer, case.inputs)
    ours, theirs = layers[keras3], layers[garden]
    assert ([(_base_name(w), w.shape) for w in theirs.weights]
            == [(_base_name(w), tuple(w.shape)) for w in ours.weights])
    ours.set_weights(_randomised(ours))
    theirs.set_weights(ours.get_weights())

    rng = np.random.default_rng(7)
    upstream = [rng.normal(size=t.shape) for t in _floats(keras3(ours, case.inputs))]
    results = {front: _loss_and_gradients(front, layer, case.inputs, upstream)
               for front, layer in layers.items()}
    (out_k, grad_k, loss_k), (out_g, grad_g, loss_g) = results[keras3], results[garden]
    _assert_close(out_g, out_k, "outputs")
    assert [g is None for g in grad_g] == [g is None for g in grad_k]
    assert all(g is not None for g in grad_k[:len(case.differentiable)])
    _assert_close([g for g in grad_g if g is not None], [g for g in grad_k if g is not None],
                  "gradients")
    assert len(theirs.losses) == len(ours.losses) > 0
    assert loss_k > 0 and abs(loss_g - loss_k) <= 1e-6 * loss_k

    for front, layer in layers.items():
        clone = type(layer).from_config(layer.get_config())
        front(clone, case.inputs)
        clone.set_weights(layer.get_weights())
        assert clone.get_config() == layer.get_config()
        _assert_close(front(clone, case.inputs), results[front][0], "config round trip")
        for policy in MIXED_POLICIES:
            _assert_mixed_precision(front, layer, policy, results[front][0])


def _assert_mixed_precision(front, reference, policy, expected):
    front.policies.set_global_policy(policy)
    try:
        layer = front.layer()
        front(layer, front.case.inputs)
        layer.set_weights(reference.get_weights())
        outputs = front(layer, front.case.inputs)
    finally:
        front.policies.set_global_policy("float32")
    assert all(w.dtype == tf.float32 for w in layer.weights)
    if front.case.mixed_output is not None:
        assert front.case.mixed_output(outputs).dtype == policy.split("_")[1], policy
    for got, want in zip(_floats(outputs), _floats(expected)):
        got, want = tf.cast(got, tf.float32).numpy(), np.asarray(want)
        assert np.isfinite(got).all(), policy
        assert np.abs(got - want).mean() <= 0.05 * np.abs(want).mean() + 1e-6, policy
