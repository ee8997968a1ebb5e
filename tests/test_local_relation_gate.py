"""The GPU path, checked without a GPU: the compiled kernel's one support gate,
dispatch by placement, the compile policy, and the workflows a user runs, on a
simulated GPU (the device listing the dispatch reads reports one; the ops still
run on this CPU, as TensorFlow's soft placement puts them there)."""

import contextlib
import os
import pathlib
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorflow.python.framework import ops as tf_framework_ops

from keras_relnet import layers, ops
from keras_relnet.applications import LRNet26
from keras_relnet.export import export, run_exported
from keras_relnet.garden import RelationBackbone
from keras_relnet.ops import placement
from keras_relnet.ops.local_relation import dispatch as local_relation_dispatch
from keras_relnet.ops.local_relation import kernel as local_relation_kernel

ROOT = pathlib.Path(__file__).resolve().parent.parent
CUDA_HOME = pathlib.Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
FAKE_GPU = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
DISPATCH_MODULE = sys.modules["keras_relnet.ops.local_relation.op"]
KERNEL_BUILT_WITH_CUDA = "cuda" in local_relation_kernel.built_devices()


@pytest.fixture
def simulated_gpu(monkeypatch):
    """The dispatch sees one GPU."""
    monkeypatch.setattr(placement, "visible_gpus", lambda: [FAKE_GPU])


@pytest.fixture
def keras_sees_a_gpu(monkeypatch, simulated_gpu):
    """Keras sees one too, so `jit_compile="auto"` resolves as on a GPU machine."""
    listing = tf.config.list_physical_devices

    def with_gpu(device_type=None):
        extra = [FAKE_GPU] if device_type in (None, "GPU") else []
        return listing(device_type) + extra

    monkeypatch.setattr(tf.config, "list_physical_devices", with_gpu)


@pytest.fixture
def decisions(monkeypatch):
    """The implementation each local relation call chose while being traced."""
    chosen = Decisions()

    def recording(*args, **kwargs):
        name, reason = local_relation_dispatch.resolve_implementation(*args, **kwargs)
        chosen.append(name)
        chosen.devices.append(placement.requested_device())
        return name, reason

    monkeypatch.setattr(DISPATCH_MODULE, "resolve_implementation", recording)
    return chosen


class Decisions(list):
    """Implementation names, and in `devices` the device each call was placed on."""

    def __init__(self):
        super().__init__()
        self.devices = []

    def clear(self):
        super().clear()
        self.devices.clear()


@contextlib.contextmanager
def numpy_forbidden():
    """Any `.numpy()` on a tensor fails: the dispatch must never read a tensor's
    value (a symbolic tensor has none, and an eager read blocks tracing)."""
    original = tf_framework_ops._EagerTensorBase.numpy

    def forbidden(self):
        raise AssertionError(".numpy() called while building or tracing a local relation")

    tf_framework_ops._EagerTensorBase.numpy = forbidden
    try:
        yield
    finally:
        tf_framework_ops._EagerTensorBase.numpy = original


def relation_model(implementation="auto", kernel_size=3, channels_per_group=2):
    inputs = keras.Input((8, 8, 4))
    x = layers.LocalRelation2D(kernel_size, channels_per_group,
                               implementation=implementation)(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def fit_data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8, 8, 8, 4)).astype("float32"), rng.integers(0, 3, 8)


def skip_unless_built_with_cuda():
    if not KERNEL_BUILT_WITH_CUDA:
        pytest.skip("the kernel library was built without CUDA (no nvcc at build time)")


# --- the example, and building every model on a GPU machine ---------

def test_the_layer_builds_and_fits_on_a_simulated_gpu(simulated_gpu):
    inputs = keras.Input((16, 16, 16))
    outputs = layers.LocalRelation2D(3, 8)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    x = np.random.default_rng(0).normal(size=(4, 16, 16, 16)).astype("float32")
    history = model.fit(x, x, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize("gpu, implementation", [
    (False, "auto"), pytest.param(True, "auto", marks=pytest.mark.slow),  # 1.5 min: XLA
    (True, "reference"), (True, "custom")])
def test_lrnet26_builds_and_traces_without_reading_a_tensor(monkeypatch, gpu, implementation):
    if gpu:
        monkeypatch.setattr(placement, "visible_gpus", lambda: [FAKE_GPU])
        if implementation == "custom":
            skip_unless_built_with_cuda()
    with numpy_forbidden():
        model = LRNet26(width_multiplier=0.25, input_shape=(32, 32, 3), classes=4,
                        relation_options={"implementation": implementation})
        images = tf.random.stateless_normal([2, 32, 32, 3], [0, 1])

        @tf.function
        def gradient_norm():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(images, training=True))
            return tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables))

        concrete = gradient_norm.get_concrete_function()
    kernel_ops = {node.type for node in concrete.graph.get_operations()
                  if node.type.startswith("KerasRelnet")}
    runs_kernel = implementation == "custom" or (implementation == "auto" and not gpu)
    assert bool(kernel_ops) == runs_kernel, kernel_ops


def test_garden_lrnet_backbone_builds_on_a_simulated_gpu(simulated_gpu, decisions):
    with numpy_forbidden():
        backbone = RelationBackbone("lrnet", 26, tf_keras.layers.InputSpec(
            shape=[None, 64, 64, 3]), width_multiplier=0.25)
    assert {level: spec.as_list()[1:3] for level, spec in backbone.output_specs.items()} == {
        "2": [16, 16], "3": [8, 8], "4": [4, 4], "5": [2, 2]}
    assert decisions and set(decisions) == {"xla"}


def test_export_on_a_simulated_gpu_is_portable_and_matches(simulated_gpu, tmp_path):
    model = relation_model()
    x, _ = fit_data()
    for name, format in (("model", "saved_model"), ("model.tflite", "tflite")):
        path = export(model, tmp_path / name, format=format)
        np.testing.assert_allclose(run_exported(path, x[:2]), model.predict(x[:2], verbose=0),
                                   atol=1e-5)
    graph = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"].graph
    assert not [n for n in graph.as_graph_def().node if n.op.startswith("KerasRelnet")]


# --- the compile policy --------------------------------------------------------

@pytest.mark.parametrize("implementation, jit_compile, compiled, ran", [
    ("auto", "auto", True, "reference"),
    ("auto", True, True, "reference"),
    ("auto", False, False, "xla"),
    ("custom", "auto", False, "custom"),
    ("custom", True, False, "custom"),
    ("custom", False, False, "custom"),
])
def test_fit_on_a_simulated_gpu_follows_the_compile_policy(keras_sees_a_gpu, decisions,
                                                           implementation, jit_compile,
                                                           compiled, ran):
    if implementation == "custom":
        skip_unless_built_with_cuda()
    model = relation_model(implementation)
    with warnings.catch_warnings():  # Keras warns when it drops jit_compile=True
        warnings.simplefilter("ignore")
        model.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit_compile)
    assert model.jit_compile == compiled
    before = [w.numpy().copy() for w in model.layers[1].weights]
    history = model.fit(*fit_data(), epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert set(decisions) == {ran}
    assert any(np.abs(b - w.numpy()).max() > 0 for b, w in zip(before, model.layers[1].weights))


def test_mirrored_strategy_decides_per_replica_device(simulated_gpu, decisions,
                                                     two_cpu_strategy):
    # Replicas on the two logical CPUs run the CPU kernel although a GPU is visible.
    with two_cpu_strategy.scope():
        model = relation_model()
        model.compile("sgd", "sparse_categorical_crossentropy")
    decisions.clear()
    model.fit(*fit_data(), epochs=1, batch_size=4, verbose=0)
    in_replicas = [name for name, device in zip(decisions, decisions.devices)
                   if device.endswith(("CPU:0", "CPU:1"))]
    assert len(in_replicas) >= 2 and set(in_replicas) == {"custom"}
    # Replicas on GPUs take the GPU policy (traced only: there are no GPUs here).
    gpus = tf.distribute.MirroredStrategy(["/gpu:0", "/gpu:1"])
    layer = layers.LocalRelation2D(3, 2)
    layer.build((1, 8, 8, 4))
    decisions.clear()
    tf.function(lambda x: gpus.run(layer, (x,))).get_concrete_function(
        tf.TensorSpec([1, 8, 8, 4]))
    assert decisions == ["xla", "xla"]


def test_a_cpu_scope_on_a_gpu_machine_runs_the_cpu_kernel(simulated_gpu, decisions):
    layer = layers.LocalRelation2D(3, 2)
    x = tf.random.stateless_normal([2, 8, 8, 4], [3, 4])
    gpu_output = layer(x)
    with tf.device("/cpu:0"):
        cpu_output = layer(x)
        traced = tf.function(layer)(x)
    assert decisions == ["xla", "custom", "custom"]
    np.testing.assert_allclose(cpu_output, gpu_output, atol=1e-5)
    np.testing.assert_allclose(traced, gpu_output, atol=1e-5)
    assert placement.device_type() == "GPU"
    with tf.device("/cpu:0"):
        assert placement.device_type() == "CPU"


def test_a_gpu_scope_without_a_gpu_falls_back_to_the_cpu():
    with tf.device("/gpu:0"):
        assert placement.device_type() == "CPU"
        assert ops.resolve_implementation("auto")[0] == "custom"


def test_tpu_style_replicated_xla_context_never_runs_the_custom_op():
    from tensorflow.python.tpu import tpu_replication

    seen = {}

    @tf.function
    def replicated():
        context = tpu_replication.TPUReplicateContext(
            b"cluster", 1, pivot=tf.raw_ops.NoOp(name="pivot"))
        context.Enter()
        try:
            seen["auto"] = ops.resolve_implementation("auto", kernel_size=3,
                                                      channels_per_group=2)[0]
            with pytest.raises(ValueError, match="inside an XLA-compiled function"):
                ops.resolve_implementation("custom")
            seen["explain"] = ops.explain().splitlines()[0]
        finally:
            context.Exit()
        return tf.constant(0)

    replicated.get_concrete_function()
    assert seen["auto"] == "reference"
    assert seen["explain"].startswith("reference (auto inside an XLA-compiled function")


def test_layer_supports_jit_follows_the_implementation():
    assert layers.LocalRelation2D(3, 2, implementation="custom").supports_jit is False
    for implementation in ("auto", "reference", "xla"):
        assert layers.LocalRelation2D(3, 2, implementation=implementation).supports_jit


def test_once_verified_auto_runs_the_cuda_kernels_and_keeps_keras_from_xla(
        monkeypatch, keras_sees_a_gpu, decisions):
    skip_unless_built_with_cuda()
    monkeypatch.setattr(local_relation_dispatch, "CUDA_KERNELS_VERIFIED",
                        "a harness record (test)")
    assert ops.resolve_implementation("auto", kernel_size=7, channels_per_group=8)[0] == "custom"
    name, reason = ops.resolve_implementation("auto", kernel_size=7, channels_per_group=3)
    assert name == "xla" and "dividing 32" in reason
    model = relation_model("auto")
    assert model.layers[1].supports_jit is False
    model.compile("sgd", "sparse_categorical_crossentropy", jit_compile="auto")
    assert model.jit_compile is False
    decisions.clear()
    model.fit(*fit_data(), epochs=1, batch_size=4, verbose=0)
    assert set(decisions) == {"custom"}
    assert '"custom" (the CUDA kernels, verified: a harness record (test))' in ops.explain()


# --- explain -------------------------------------------------------------------

def test_explain_on_cpu_a_simulated_gpu_and_in_xla(monkeypatch):
    cpu = ops.explain(kernel_size=7, channels_per_group=8).splitlines()
    assert cpu[0] == "custom (auto on CPU: the compiled kernel supports this call)"
    assert cpu[1] == "Policy of implementation='auto':"
    assert any(line.startswith('  GPU: "xla"') for line in cpu)
    assert cpu[-1].startswith("Kernel library: ") and "cpu" in cpu[-1]
    monkeypatch.setattr(placement, "visible_gpus", lambda: [FAKE_GPU])
    gpu = ops.explain().splitlines()[0]
    assert gpu.startswith("xla (auto on GPU: XLA fuses the window loop; the CUDA kernels have "
                          "not yet passed the harness on GPU hardware")
    traced = {}

    def explained(key):
        traced[key] = ops.explain().splitlines()[0]
        return tf.constant(0)

    tf.function(lambda: explained("graph")).get_concrete_function()
    tf.function(lambda: explained("xla"), jit_compile=True).get_concrete_function()
    assert traced["graph"].startswith("xla (auto on GPU")
    assert traced["xla"].startswith("reference (auto inside an XLA-compiled")
    unsupported = ops.explain("custom", kernel_size=21, channels_per_group=1).splitlines()[0]
    if KERNEL_BUILT_WITH_CUDA:
        assert unsupported.startswith("unavailable (implementation='custom' cannot run this "
                                      "call on GPU: the CUDA kernels need kernel_size**2")
        assert "received dtype float32, kernel_size 21, channels_per_group 1" in unsupported


def test_explicit_reference_and_xla_never_touch_the_kernel_library(monkeypatch,
                                                                    simulated_gpu):
    def untouchable(*args, **kwargs):
        raise AssertionError("the kernel library was consulted")

    monkeypatch.setattr(local_relation_kernel, "library", untouchable)
    monkeypatch.setattr(local_relation_kernel, "unsupported_reason", untouchable)
    x = tf.random.stateless_normal([1, 8, 8, 4], [5, 6])
    for implementation in ("reference", "xla"):
        layer = layers.LocalRelation2D(3, 2, implementation=implementation)
        assert layer(x).shape == (1, 8, 8, 4)
        assert tf.function(layer)(x).shape == (1, 8, 8, 4)
    assert ops.resolve_implementation("auto")[0] == "xla"  # GPU policy: no kernel needed


def test_custom_on_a_simulated_gpu_says_which_limit_it_hits(simulated_gpu):
    skip_unless_built_with_cuda()
    with pytest.raises(ValueError, match=r"on GPU: the CUDA kernels need channels_per_group "
                                         r"dividing 32; received dtype float32, kernel_size 3, "
                                         r"channels_per_group 3"):
        layers.LocalRelation2D(3, 3, implementation="custom")(tf.zeros([1, 8, 8, 12]))
    x = tf.zeros([1, 8, 8, 4])
    with pytest.raises(ValueError, match=r"kernel_size\*\*2 \* ceil\(32 / channels_per_group\) "
                                         r"<= 12288"):
        tf.function(layers.LocalRelation2D(21, 1, implementation="custom"))(x)
    name, reason = ops.resolve_implementation("auto", kernel_size=21, channels_per_group=1)
    assert name == "xla" and "have not yet passed the harness" in reason


# --- the gate against the kernels ------------------------------------------------

GATE_DTYPES = ("float32", "float16", "bfloat16", "float64")


@settings(max_examples=25, deadline=None, derandomize=True)
@given(kernel_size=st.sampled_from([1, 3, 5, 7, 9, 11]),
       group_size=st.sampled_from([1, 2, 3, 4, 5, 8, 12, 16, 32, 48]),
       dtype=st.sampled_from(GATE_DTYPES), strides=st.sampled_from([1, 2]))
def test_gate_accepts_exactly_what_the_cpu_kernels_run(kernel_size, group_size, dtype,
                                                       strides):
    accepted = local_relation_kernel.unsupported_reason("CPU", dtype, kernel_size,
                                                        group_size) is None
    module, _ = local_relation_kernel.library()
    rng = np.random.default_rng(kernel_size * 100 + group_size)
    shapes = ([1, -(-7 // strides), -(-6 // strides), 2], [1, 7, 6, 2],
              [1, 7, 6, 2 * group_size], [2, kernel_size, kernel_size])
    query, key, value, prior = (rng.normal(size=shape) for shape in shapes)
    try:
        with tf.device("/cpu:0"):
            query, key, value = (tf.constant(t, dtype) for t in (query, key, value))
            prior = tf.constant(prior, tf.float32)
            output, lse = module.keras_relnet_local_relation(query, key, value, prior,
                                                             strides=strides)
            module.keras_relnet_local_relation_grad(query, key, value, prior, output, lse,
                                                    tf.ones_like(output), strides=strides)
        ran = True
    except (tf.errors.OpError, TypeError, ValueError):  # rejected: not a storage type, or the table
        ran = False
    assert ran == accepted


@pytest.mark.skipif(not (CUDA_HOME / "include" / "cuda_bf16.h").exists(),
                    reason="no CUDA headers on this machine (set CUDA_HOME)")
def test_gate_accepts_exactly_what_the_cuda_kernels_run_under_emulation():
    skip_unless_built_with_cuda()
    rng = np.random.default_rng(0)
    calls = {(19, 1, "float32", 1), (21, 1, "float32", 2), (27, 2, "bfloat16", 1),
             (29, 2, "float16", 1), (7, 8, "float64", 1), (7, 3, "float32", 2)}
    while len(calls) < 36:
        calls.add((int(rng.choice([1, 3, 5, 7, 9, 15, 21, 25])),
                   int(rng.choice([1, 2, 3, 4, 6, 8, 16, 24, 32, 64])),
                   str(rng.choice(GATE_DTYPES)), int(rng.choice([1, 2]))))
    calls = sorted(calls)
    subprocess.run(["make", "cuda-emulation"], cwd=ROOT, check=True, capture_output=True)
    result = subprocess.run([str(ROOT / "build" / "cuda_emulation"), "--support"],
                            input="".join(f"{k} {m} {d} {s}\n" for k, m, d, s in calls),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    answers = dict(line.split(": ") for line in result.stdout.splitlines())
    assert len(answers) == len(calls)
    for k, m, dtype, strides in calls:
        accepted = local_relation_kernel.unsupported_reason("GPU", dtype, k, m) is None
        answer = answers[f"{k} {m} {dtype} {strides}"]
        assert answer.startswith("ran") == accepted, (k, m, dtype, strides, answer)
        assert answer.startswith("ran") or answer == "unsupported", answer
    assert {answer.split()[0] for answer in answers.values()} == {"ran", "unsupported"}
