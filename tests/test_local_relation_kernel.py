"""The compiled local relation kernel (`keras_relnet/ops/local_relation/csrc/`) against the
reference implementation: forward and every gradient on random shapes,
finite differences, half precision, malformed inputs, dispatch and export."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_relnet import layers, ops
from keras_relnet.export import export
from keras_relnet.ops.local_relation import kernel as local_relation_kernel

KERNEL, _ = local_relation_kernel.library()
ROOT = pathlib.Path(__file__).resolve().parent.parent


def relation_inputs(seed, batch, height, width, groups, group_size, kernel_size, strides,
                    dtype="float32"):
    rng = np.random.default_rng(seed)
    out_h, out_w = -(-height // strides), -(-width // strides)
    shapes = [(batch, out_h, out_w, groups), (batch, height, width, groups),
              (batch, height, width, groups * group_size), (groups, kernel_size, kernel_size)]
    return [tf.constant(rng.normal(size=shape), dtype) for shape in shapes]


def value_and_gradients(implementation, inputs, d_output, **options):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        output = ops.local_relation_aggregation(*inputs, implementation=implementation, **options)
        loss = tf.reduce_sum(tf.cast(output, tf.float32) * d_output)
    return [output] + tape.gradient(loss, inputs)


def test_kernel_library_is_built_and_loads():
    module, reason = local_relation_kernel.library()
    assert module is not None, reason
    assert "cpu" in local_relation_kernel.built_devices()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(batch=st.integers(1, 4), height=st.integers(1, 13), width=st.integers(1, 13),
       groups=st.integers(1, 3), group_size=st.sampled_from([1, 4, 8, 16]),
       kernel_size=st.sampled_from([3, 5, 7, 9]), strides=st.sampled_from([1, 2]),
       dilation_rate=st.sampled_from([1, 2]), composability=st.sampled_from(ops.COMPOSABILITIES),
       scale=st.sampled_from([1.0, 0.3]), seed=st.integers(0, 2**16))
def test_forward_and_gradients_equal_the_reference(batch, height, width, groups, group_size,
                                                   kernel_size, strides, dilation_rate,
                                                   composability, scale, seed):
    inputs = relation_inputs(seed, batch, height, width, groups, group_size, kernel_size, strides)
    options = dict(strides=strides, dilation_rate=dilation_rate, composability=composability,
                   scale=scale)
    d_output = tf.random.stateless_normal(inputs[0].shape[:3] + [groups * group_size], [seed, 1])
    expected = value_and_gradients("reference", inputs, d_output, **options)
    got = value_and_gradients("custom", inputs, d_output, **options)
    for name, ours, theirs in zip(["output", "query", "key", "value", "prior"], got, expected):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5, err_msg=name)


@pytest.mark.parametrize("batch", [1, 5])  # fewer images than threads: two passes; else one
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
# The kernels run groups in vectors of sixteen: 13 and 25 (LR-Net-50's first
# two stages at m = 8) fill one and two vectors with padding, odd last groups.
@pytest.mark.parametrize("groups", [3, 13, 25])
def test_both_backward_schedules_equal_the_reference(batch, dtype, groups):
    inputs = relation_inputs(7, batch, 10, 9, groups, 8, 7, 1)
    d_output = tf.random.stateless_normal([batch, 10, 9, groups * 8], [7, 7])
    expected = value_and_gradients("reference", inputs, d_output)
    cast = [tf.cast(t, dtype) for t in inputs[:3]] + [inputs[3]]
    got = value_and_gradients("custom", cast, d_output)
    tolerance = 1e-5 if dtype == "float32" else 6e-2
    for name, ours, theirs in zip(["output", "query", "key", "value", "prior"], got, expected):
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(tf.cast(ours, tf.float32), theirs, atol=tolerance * scale,
                                   rtol=tolerance, err_msg=name)


# The one-pass backward (batch >= threads) stages the rows of a window's span in
# slots and writes a row's gradients when it leaves the window: G = 100 ends in
# an eight-group block after sixteen-group ones, m = 32 is its widest m, and
# stride 2 with dilation 2 leaves odd input rows that no window reads (their
# gradients must be zero, not left unwritten).
@pytest.mark.parametrize("groups, group_size, kernel_size, strides, dilation_rate", [
    (100, 8, 7, 1, 1), (3, 32, 3, 2, 1), (5, 4, 3, 2, 2), (13, 8, 5, 1, 2)])
def test_the_one_pass_backward_equals_the_reference(groups, group_size, kernel_size, strides,
                                                    dilation_rate):
    inputs = relation_inputs(11, 3, 9, 8, groups, group_size, kernel_size, strides)
    options = dict(strides=strides, dilation_rate=dilation_rate)
    d_output = tf.random.stateless_normal(inputs[0].shape[:3] + [groups * group_size], [11, 1])
    expected = value_and_gradients("reference", inputs, d_output, **options)
    got = value_and_gradients("custom", inputs, d_output, **options)
    for name, ours, theirs in zip(["output", "query", "key", "value", "prior"], got, expected):
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5, err_msg=name)


# Queries and keys far apart (magnitude 30: logits hundreds below the largest
# prior, most weights underflowing) and close together, for each composability
# and a zero and a negative scale: the kernel's softmax stays exact and finite.
@pytest.mark.parametrize("magnitude", [0.3, 3.0, 30.0])
@pytest.mark.parametrize("composability, scale", [
    ("squared_difference", 1.0), ("abs_difference", 0.5), ("squared_difference", 0.0),
    ("dot", 0.2), ("squared_difference", -0.01)])
def test_the_forward_equals_the_reference_with_far_apart_logits(magnitude, composability, scale):
    query, key, value, prior = relation_inputs(5, 2, 9, 10, 13, 8, 7, 1)
    query, key = query * magnitude, key * magnitude
    options = dict(composability=composability, scale=scale)
    expected = ops.local_relation_aggregation(query, key, value, 3.0 * prior,
                                              implementation="reference", **options)
    got = ops.local_relation_aggregation(query, key, value, 3.0 * prior, implementation="custom",
                                         **options)
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
def test_gradients_match_finite_differences(strides):
    inputs = relation_inputs(0, 2, 5, 6, 2, 4, 3, strides)
    for index in range(4):
        def function(x, index=index):
            arguments = list(inputs)
            arguments[index] = x
            return ops.local_relation_aggregation(*arguments, strides=strides, implementation="custom")

        theoretical, numerical = tf.test.compute_gradient(function, [inputs[index]], delta=1e-2)
        np.testing.assert_allclose(theoretical[0], numerical[0], atol=2e-3, rtol=2e-2)


@pytest.mark.parametrize("dtype, tolerance", [("float16", 1e-2), ("bfloat16", 6e-2)])
def test_half_precision_stays_close_to_float32(dtype, tolerance):
    inputs = relation_inputs(1, 2, 9, 7, 3, 8, 7, 1)
    d_output = tf.random.stateless_normal([2, 9, 7, 24], [0, 0])
    expected = value_and_gradients("custom", inputs, d_output)
    half = [tf.cast(t, dtype) for t in inputs[:3]] + [inputs[3]]
    got = value_and_gradients("custom", half, d_output)
    assert got[0].dtype == dtype
    for name, ours, theirs in zip(["output", "query", "key", "value", "prior"], got, expected):
        scale = max(1.0, float(np.abs(theirs).max()))
        error = float(np.abs(tf.cast(ours, tf.float32) - theirs).max())
        assert error < tolerance * scale, (name, error, scale)


def raw_forward(query, key, value, prior, **attributes):
    return KERNEL.keras_relnet_local_relation(query, key, value, prior, **attributes)


@pytest.mark.parametrize("shapes, attributes, message", [
    (((1, 4, 4), (1, 4, 4, 2), (1, 4, 4, 4), (2, 3, 3)), {}, "query must have rank 4"),
    (((1, 4, 4, 2), (2, 4, 4, 2), (2, 4, 4, 4), (2, 3, 3)), {}, "query must have shape"),
    (((1, 4, 4, 2), (1, 4, 4, 2), (1, 4, 4, 5), (2, 3, 3)), {}, "multiple of the key groups"),
    (((1, 4, 4, 2), (1, 4, 4, 2), (1, 4, 4, 4), (2, 4, 4)), {}, "odd k"),
    (((1, 4, 4, 2), (1, 4, 4, 2), (1, 4, 4, 4), (3, 3, 3)), {}, "prior must have shape"),
    (((1, 4, 4, 2), (1, 4, 4, 2), (1, 4, 4, 4), (2, 3, 3)), {"strides": 2},
     "query must have shape"),
    (((1, 0, 4, 2), (1, 0, 4, 2), (1, 0, 4, 4), (2, 3, 3)), {}, "non-empty height"),
    (((1, 4, 4, 2), (1, 4, 4, 2), (1, 4, 4, 4), (2, 3, 3)), {"strides": 3}, "strides must be"),
    (((1, 4, 4, 2), (1, 4, 4, 2), (1, 4, 4, 4), (2, 3, 3)), {"dilation_rate": -1},
     "dilation_rate"),
])
def test_malformed_inputs_to_the_raw_op_raise_invalid_argument(shapes, attributes, message):
    tensors = [tf.zeros(shape) for shape in shapes]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        raw_forward(*tensors, **attributes)


def test_malformed_inputs_to_the_raw_gradient_op_raise_invalid_argument():
    query, key, value, prior = relation_inputs(0, 1, 4, 4, 2, 2, 3, 1)
    output, lse = raw_forward(query, key, value, prior)
    with pytest.raises(tf.errors.InvalidArgumentError, match="d_output must have shape"):
        KERNEL.keras_relnet_local_relation_grad(query, key, value, prior, output, lse,
                                                tf.zeros([1, 4, 4, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="log_sum_exp must have shape"):
        KERNEL.keras_relnet_local_relation_grad(query, key, value, prior, output, lse[:, :2],
                                                output)


def test_graph_shape_inference_rejects_mismatched_shapes():
    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 2]), tf.TensorSpec([None, 4, 4, 3])])
    def mismatched(query, key):
        return raw_forward(query, key, tf.zeros([1, 4, 4, 4]), tf.zeros([2, 3, 3]))

    with pytest.raises(ValueError, match="Dimensions must be equal"):
        mismatched.get_concrete_function()

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2])] * 2)
    def dynamic(query, key):
        return raw_forward(query, key, tf.zeros([1, 6, 6, 4]), tf.zeros([2, 3, 3]))[0]

    # The batch and output size follow from the value's static shape.
    assert dynamic.get_concrete_function().structured_outputs.shape.as_list() == [1, 6, 6, 4]


def test_auto_dispatches_to_the_kernel_and_explains_why():
    assert ops.resolve_implementation("auto")[0] == "custom"
    assert "compiled kernel" in ops.explain("auto")
    name, reason = ops.resolve_implementation("auto", tf.float64)
    assert name == "reference" and "float64" in reason
    with pytest.raises(ValueError, 
                       match="implementation='custom' cannot run this call on CPU:.*float64"):
        ops.resolve_implementation("custom", tf.float64)


def test_custom_inside_xla_raises_and_auto_falls_back_to_the_reference():
    inputs = relation_inputs(0, 1, 6, 6, 2, 4, 3, 1)
    compiled = lambda implementation: tf.function(
        lambda *a: ops.local_relation_aggregation(*a, implementation=implementation), jit_compile=True)
    np.testing.assert_allclose(compiled("auto")(*inputs),
                               ops.local_relation_aggregation(*inputs, implementation="custom"), atol=1e-5)
    with pytest.raises(ValueError, match="inside an XLA-compiled function"):
        compiled("custom")(*inputs)


def test_missing_library_warns_once_for_auto_and_raises_for_custom(monkeypatch):
    missing = (None, "the package carries no compiled kernel, and building on first use is off")
    monkeypatch.setattr(local_relation_kernel, "library", lambda: missing)
    with pytest.raises(ValueError, match="carries no compiled kernel"):
        ops.resolve_implementation("custom")
    with pytest.warns(UserWarning, match="compiled local relation kernel is unavailable"):
        assert ops.resolve_implementation("auto")[0] == "reference"


def test_layer_trains_with_the_kernel_under_tf_function_and_mixed_precision():
    x = tf.random.stateless_normal([2, 8, 8, 16], [0, 3])
    layer = layers.LocalRelation2D(kernel_size=5, channels_per_group=4, implementation="custom")
    reference = layers.LocalRelation2D(kernel_size=5, channels_per_group=4,
                                       implementation="reference")
    layer(x), reference(x)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(tf.function(layer)(x), reference(x), atol=1e-5)
    policy = layers.LocalRelation2D(kernel_size=5, channels_per_group=4, implementation="custom",
                                    dtype="mixed_float16")
    policy(x)
    policy.set_weights(layer.get_weights())
    half = policy(x)
    assert half.dtype == tf.float16
    np.testing.assert_allclose(tf.cast(half, tf.float32), reference(x), atol=2e-2)


def test_exports_never_contain_the_custom_op(tmp_path):
    inputs = keras.Input((8, 8, 8))
    outputs = layers.LocalRelation2D(kernel_size=3, channels_per_group=4,
                                     implementation="custom")(inputs)
    model = keras.Model(inputs, outputs)
    path = export(model, str(tmp_path / "model"), format="saved_model")
    graph_ops = {node.op for function in tf.saved_model.load(path).signatures.values()
                 for node in function.graph.as_graph_def().node}
    graph_ops |= {node.op for function in tf.saved_model.load(path).signatures.values()
                  for library in [function.graph.as_graph_def().library]
                  for definition in library.function for node in definition.node_def}
    assert not any(op.startswith("KerasRelnet") for op in graph_ops)
    x = tf.random.stateless_normal([1, 8, 8, 8], [1, 1])
    served = tf.saved_model.load(path).signatures["serving_default"](x)
    np.testing.assert_allclose(list(served.values())[0], model(x), atol=1e-5)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no nvcc on this machine")
def test_cuda_kernels_and_harness_compile_for_sm80_and_sm90():
    # The installed library was built with nvcc (sm_80 and sm_90), so it has GPU kernels.
    assert "cuda" in local_relation_kernel.built_devices()
    subprocess.run(["make", "cuda-harness"], cwd=ROOT, check=True, capture_output=True)
    assert (ROOT / "build" / "cuda_harness").exists()


CUDA_HOME = pathlib.Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))


@pytest.mark.skipif(not (CUDA_HOME / "include" / "cuda_bf16.h").exists(),
                    reason="no CUDA headers on this machine (set CUDA_HOME)")
def test_cuda_kernels_equal_the_cpu_kernels_under_cpu_emulation():
    # The harness and the CUDA kernel source, compiled for the CPU: every
    # block's threads run as fibers (barriers, warp shuffles, shared memory).
    subprocess.run(["make", "cuda-emulation"], cwd=ROOT, check=True, capture_output=True)
    result = subprocess.run([str(ROOT / "build" / "cuda_emulation"), "--cases", "12"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 random cases, 0 mismatches" in result.stdout


@pytest.mark.skipif(not (CUDA_HOME / "include" / "cuda_bf16.h").exists(),
                    reason="no CUDA headers on this machine (set CUDA_HOME)")
def test_cuda_fixed_order_backward_is_bit_identical_over_block_orders_under_emulation():
    # What op determinism runs on a GPU: three runs under different block and
    # warp orders must give the same bits. The atomics' backward, run the same
    # way, must differ somewhere, or the shuffled schedules would test nothing.
    subprocess.run(["make", "cuda-emulation"], cwd=ROOT, check=True, capture_output=True)
    result = subprocess.run([str(ROOT / "build" / "cuda_emulation"), "--determinism",
                             "--cases", "6"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 random cases, 0 failures" in result.stdout, result.stdout
    differed = int(re.search(r"differed between two runs in (\d+) cases", result.stdout)[1])
    assert differed > 0, result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bazel") is None, reason="no bazel on this machine")
def test_bazel_builds_the_cpu_library_and_it_matches_the_numpy_spec(tmp_path):
    target = "keras_relnet/ops/local_relation/csrc:_local_relation_ops.native.so"
    subprocess.run(["bazel", "--batch", "build", f"//{target}"], cwd=ROOT,
                   check=True, capture_output=True)
    # A fresh process: this one has the package's library (the same ops) loaded.
    script = tmp_path / "check.py"
    script.write_text(f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
import numpy as np, tensorflow as tf
from numpy_local_relation import numpy_local_relation
library = tf.load_op_library({str(ROOT / "bazel-bin" / target.replace(":", "/"))!r})
rng = np.random.default_rng(0)
q, k = rng.normal(size=(2, 5, 4, 2)), rng.normal(size=(2, 9, 7, 2))
v, p = rng.normal(size=(2, 9, 7, 8)), rng.normal(size=(2, 3, 3))
q, k, v, p = (x.astype("float32") for x in (q, k, v, p))
output, _ = library.keras_relnet_local_relation(q, k, v, p, strides=2)
assert np.abs(output - numpy_local_relation(q, k, v, p, strides=2)).max() < 1e-5
""")
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
