"""The local relation op against the NumPy spec, finite differences, and
between its implementations."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from keras_relnet import ops
from keras_relnet.ops.local_relation import kernel as local_relation_kernel
from keras_relnet.ops.local_relation.reference import local_relation_formula
from keras_relnet.ops.portable import portable_graphs
from keras_relnet.utils.flops import local_relation_flops
from numpy_local_relation import numpy_geometry_prior, numpy_local_relation

SIZES = [(5, 6), (7, 7), (8, 5)]  # odd and even, smaller than a 7x7 window


def random_inputs(seed, batch, height, width, groups, group_size, kernel_size,
                  strides, dtype=np.float32):
    rng = np.random.default_rng(seed)
    out_h, out_w = -(-height // strides), -(-width // strides)
    return (
        rng.normal(size=(batch, out_h, out_w, groups)).astype(dtype),
        rng.normal(size=(batch, height, width, groups)).astype(dtype),
        rng.normal(size=(batch, height, width, groups * group_size)).astype(dtype),
        rng.normal(size=(groups, kernel_size, kernel_size)).astype(dtype),
    )


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("kernel_size", [3, 5, 7])
@pytest.mark.parametrize("composability", ops.COMPOSABILITIES)
def test_reference_matches_numpy_spec(strides, kernel_size, composability):
    for index, (height, width) in enumerate(SIZES):
        args = random_inputs(index, 2, height, width, 2, 3, kernel_size, strides)
        got = ops.local_relation_aggregation(*args, strides=strides,
                                             composability=composability, scale=0.7,
                                             implementation="reference")
        want = numpy_local_relation(*args, strides=strides, composability=composability,
                                    scale=0.7)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("strides", [1, 2])
def test_dilation_matches_numpy_spec(strides):
    args = random_inputs(3, 1, 9, 8, 2, 2, 3, strides)
    got = ops.local_relation_aggregation(*args, strides=strides, dilation_rate=2,
                                         implementation="reference")
    want = numpy_local_relation(*args, strides=strides, dilation_rate=2)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("implementation", ["reference", "xla", "custom"])
@pytest.mark.parametrize("strides, dilation_rate, composability", [
    (1, 1, "squared_difference"), (2, 1, "dot"), (1, 2, "abs_difference"),
    (2, 2, "squared_difference")])
def test_drivers_match_the_readable_formula(implementation, strides, dilation_rate,
                                            composability):
    if implementation == "custom" and local_relation_kernel.library()[0] is None:
        pytest.skip(local_relation_kernel.library()[1])
    inputs = [tf.constant(x) for x in random_inputs(11, 2, 7, 6, 2, 4, 5, strides)]
    options = dict(strides=strides, dilation_rate=dilation_rate, composability=composability,
                   scale=0.8)
    upstream = tf.constant(np.random.default_rng(12).normal(
        size=inputs[0].shape[:3] + (8,)).astype("float32"))

    def output_and_gradients(relation):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            output = relation(*inputs, **options)
            loss = tf.reduce_sum(output * upstream)
        return [output] + tape.gradient(loss, inputs)

    got = output_and_gradients(functools.partial(ops.local_relation_aggregation,
                                                 implementation=implementation))
    want = output_and_gradients(local_relation_formula)
    for name, a, b in zip(["output", "d_query", "d_key", "d_value", "d_prior"], got, want):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=2e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("composability", ops.COMPOSABILITIES)
def test_portable_graph_matches_numpy_spec_with_dominant_off_image_logits(strides,
                                                                        composability):
    # Queries above 11 and keys below -11 put every in-image logit 100+ below
    # the zero padding's: masking after a max over all cells would underflow
    # to 0/0, the portable (finite-mask) softmax must not.
    query, key, value, prior = random_inputs(5, 2, 6, 5, 2, 3, 5, strides)
    query, key = np.abs(query) + 11.0, -np.abs(key) - 11.0
    with portable_graphs():
        got = tf.function(lambda *a: ops.local_relation_aggregation(
            *a, strides=strides, composability=composability))(query, key, value, prior)
    want = numpy_local_relation(query, key, value, prior, strides=strides,
                                composability=composability)
    # Logits reach ~500 here; float32 rounds them by ~5e-5.
    np.testing.assert_allclose(got.numpy(), want, atol=2e-4, rtol=0)

def test_geometry_prior_matches_numpy_spec():
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=s).astype(np.float32) for s in [(2, 5), (5,), (5, 3), (3,)]]
    got = ops.geometry_prior(7, *[tf.constant(w) for w in weights])
    np.testing.assert_allclose(got.numpy(), numpy_geometry_prior(7, *weights), atol=1e-5)


def gradient_errors(implementation, strides, composability, kernel_size=3):
    args = [tf.constant(a) for a in random_inputs(
        7, 1, 5, 4, 2, 2, kernel_size, strides, np.float64)]
    relation = tf.function(lambda *a: ops.local_relation_aggregation(
        *a, strides=strides, composability=composability, scale=0.8,
        implementation=implementation))
    analytic, numeric = tf.test.compute_gradient(relation, args, delta=1e-6)
    return [np.abs(a - n).max() for a, n in zip(analytic, numeric)]


@pytest.mark.parametrize("implementation", ["reference"])  # "xla" equals it: the test below
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("composability", ops.COMPOSABILITIES)
def test_gradients_match_finite_differences(implementation, strides, composability):
    # float64 end to end: the op keeps float64 and the check is tight.
    errors = gradient_errors(implementation, strides, composability)
    assert max(errors) < 1e-7, errors


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("composability", ops.COMPOSABILITIES)
def test_xla_equals_reference_forward_and_gradients(strides, composability):
    args = [tf.constant(a) for a in random_inputs(11, 2, 9, 6, 3, 4, 5, strides)]
    upstream = tf.random.stateless_normal([2, -(-9 // strides), -(-6 // strides), 12], [1, 2])

    def run(implementation):
        with tf.GradientTape() as tape:
            tape.watch(args)
            output = ops.local_relation_aggregation(*args, strides=strides, composability=composability,
                                        implementation=implementation)
        return [output] + tape.gradient(output, args, output_gradients=upstream)

    for xla, reference in zip(run("xla"), run("reference")):
        np.testing.assert_allclose(xla.numpy(), reference.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_inputs_accumulate_in_float32(dtype):
    args32 = [tf.constant(a) for a in random_inputs(5, 2, 7, 6, 2, 4, 5, 1)]
    output = ops.local_relation_aggregation(*[tf.cast(a, dtype) for a in args32])
    assert output.dtype == dtype
    want = numpy_local_relation(*[tf.cast(tf.cast(a, dtype), tf.float32).numpy()
                                  for a in args32])
    tolerance = 1e-2 if dtype == tf.float16 else 4e-2  # one rounding of the output
    np.testing.assert_allclose(tf.cast(output, tf.float32).numpy(), want,
                               atol=tolerance, rtol=tolerance)


def test_large_logits_stay_finite_in_float16():
    # (q - key)^2 ~ 1e6 overflows float16; the op must compose in float32.
    query, key, value, prior = random_inputs(2, 1, 6, 6, 2, 2, 3, 1)
    output = ops.local_relation_aggregation(tf.constant(query * 500, tf.float16),
                                tf.constant(key * 500, tf.float16),
                                tf.constant(value, tf.float16), tf.constant(prior, tf.float16))
    assert np.isfinite(output.numpy()).all()


def test_unknown_height_and_width_under_tf_function():
    args = random_inputs(4, 2, 7, 5, 2, 2, 3, 2)
    relation = tf.function(
        lambda *a: ops.local_relation_aggregation(*a, strides=2),
        input_signature=[tf.TensorSpec([None, None, None, 2])] * 2
        + [tf.TensorSpec([None, None, None, 4]), tf.TensorSpec([2, 3, 3])],
    )
    np.testing.assert_allclose(relation(*args).numpy(),
                               numpy_local_relation(*args, strides=2), atol=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (dict(query=np.zeros((2, 4, 4))), "`query` must be a rank-4"),
    (dict(geometry_prior=np.zeros((2, 4, 4))), "odd positive"),
    (dict(geometry_prior=np.zeros((3, 3, 3))), "same number of groups"),
    (dict(value=np.zeros((1, 4, 4, 5))), "multiple of the 2 groups"),
    (dict(key=np.zeros((1, 5, 4, 2))), "`key` shape"),
    (dict(query=np.zeros((1, 3, 4, 2))), "`query` shape"),
    (dict(strides=3), "`strides` must be one of"),
    (dict(dilation_rate=0), "`dilation_rate` must be a positive integer"),
    (dict(composability="cosine"), "`composability` must be one of"),
    (dict(implementation="cuda"), "`implementation` must be one of"),
])
def test_bad_arguments_raise_value_error(arguments, message):
    call = dict(query=np.zeros((1, 4, 4, 2)), key=np.zeros((1, 4, 4, 2)),
                value=np.zeros((1, 4, 4, 4)), geometry_prior=np.zeros((2, 3, 3)))
    call.update(arguments)
    tensors = {k: tf.constant(v, tf.float32) for k, v in call.items() if isinstance(v, np.ndarray)}
    options = {k: v for k, v in call.items() if not isinstance(v, np.ndarray)}
    with pytest.raises(ValueError, match=message):
        ops.local_relation_aggregation(**tensors, **options)


def test_explain_names_the_backend_and_why():
    assert ops.explain("xla").splitlines()[0] == "xla (requested explicitly)"
    name, reason = ops.resolve_implementation("auto")
    assert name == "custom" and "CPU" in reason  # no GPU here; the kernel is built


def test_flops_formula_counts_each_part():
    # 4x4 input, C=8, m=4 (G=2), k=3, stride 1, value projection, h=8.
    projections = 16 * 8 * 2 * 2 + 16 * 8 * 8
    logits, aggregation = 16 * 2 * 9, 16 * 8 * 9
    prior = 9 * (2 * 8 + 8 * 2)
    assert local_relation_flops((4, 4), 8, 4, 3) == (
        projections + logits + aggregation + prior)


def test_reference_never_builds_a_patch_sized_tensor():
    # A patch tensor holds k*k values per input element; the reference's largest
    # tensors are the [k*k, B, H, W, G] logits, m = 8 times smaller.
    query, key, value, prior = [tf.constant(a) for a in random_inputs(0, 2, 12, 12, 2, 8, 7, 1)]

    def forward_backward(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            output = ops.local_relation_aggregation(*args, implementation="reference")
        return tape.gradient(output, args)

    graph = tf.function(forward_backward).get_concrete_function(query, key, value, prior).graph
    sizes = [t.shape.num_elements() for op in graph.get_operations() for t in op.outputs
             if t.shape.is_fully_defined()]
    patch_elements = 49 * value.shape.num_elements()
    assert max(sizes) <= patch_elements // 8, (max(sizes), patch_elements)
