"""The hand-written gradients of attention pooling and the context add."""

import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.ops.context_pooling import add_context, attention_pool, sum_over_positions
from tests.layer_contract import assert_loss_gradients_match_finite_differences
from tests.numpy_context import softmax


def random(shape, seed):
    return tf.Variable(np.random.default_rng(seed).normal(size=shape))


def test_attention_pool_matches_numpy():
    x, kernel, bias = random([2, 3, 5, 4], 0), random([4, 1], 1), random([1], 2)
    context, weights = attention_pool(x, kernel, bias)
    flat = x.numpy().reshape(2, 15, 4)
    want_weights = softmax((flat @ kernel.numpy() + bias.numpy())[..., 0], axis=1)
    np.testing.assert_allclose(weights.numpy().reshape(2, 15), want_weights, atol=1e-12)
    np.testing.assert_allclose(context.numpy(), np.einsum("bl,blc->bc", want_weights, flat),
                               atol=1e-12)


@pytest.mark.parametrize("through", ["context", "weights", "both"])
def test_attention_pool_gradients_match_finite_differences(through):
    x, kernel, bias = random([2, 3, 4, 5], 3), random([5, 1], 4), random([1], 5)
    context_upstream = tf.constant(np.random.default_rng(6).normal(size=[2, 5]))
    weights_upstream = tf.constant(np.random.default_rng(7).normal(size=[2, 3, 4]))

    def loss():
        context, weights = attention_pool(x, kernel, bias)
        terms = {"context": tf.reduce_sum(context * context_upstream),
                 "weights": tf.reduce_sum(weights * weights_upstream)}
        return terms.get(through, terms["context"] + terms["weights"])

    assert_loss_gradients_match_finite_differences(loss, [x, kernel, bias], atol=1e-8, rtol=0)


def test_add_context_gradients_match_finite_differences():
    x, context = random([2, 3, 4, 5], 8), random([2, 5], 9)
    upstream = tf.constant(np.random.default_rng(10).normal(size=[2, 3, 4, 5]))
    loss = lambda: tf.reduce_sum(add_context(x, context) ** 2 * upstream)
    assert_loss_gradients_match_finite_differences(loss, [x, context], atol=1e-7, rtol=0)


def test_half_precision_pools_in_float32():
    x = tf.constant(np.random.default_rng(11).normal(size=[2, 8, 8, 16]), tf.float16)
    kernel, bias = tf.ones([16, 1]) * 0.1, tf.zeros([1])
    context, weights = attention_pool(x, kernel, bias)
    assert (context.dtype, weights.dtype) == (tf.float16, tf.float32)
    want, _ = attention_pool(tf.cast(x, tf.float32), kernel, bias)
    np.testing.assert_allclose(context.numpy(), want.numpy(), atol=2e-3)
    sums = sum_over_positions(tf.fill([1, 64, 64, 2], tf.constant(0.1, tf.float16)))
    np.testing.assert_allclose(sums.numpy(), 409.6, rtol=1e-3)  # float16 accumulation drifts


def test_unknown_spatial_dims_under_tf_function():
    spec = tf.TensorSpec([None, None, None, 3])

    @tf.function(input_signature=[spec])
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            context, _ = attention_pool(x, tf.ones([3, 1]), tf.zeros([1]))
            loss = tf.reduce_sum(add_context(x, context) ** 2)
        return tape.gradient(loss, x)

    for shape in ([1, 2, 3, 3], [2, 5, 4, 3]):
        assert gradient(tf.ones(shape)).shape == shape
