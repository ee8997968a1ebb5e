"""Export to SavedModel, TFLite and ONNX: parity with Keras on real photos,
builtin-only TFLite, quantisation, and clean failures."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_relnet.applications import preprocess_input
from keras_relnet.applications.registry import MODELS, build_model
from keras_relnet.export import (
    export,
    load_exported,
    run_exported,
    tflite_custom_operators,
    tflite_operators,
)
from keras_relnet.layers import (
    DuplicateRemoval,
    GlobalContext,
    LearnableRegionFeatures,
    LocalRelation2D,
    NonLocal2D,
    ObjectRelation,
    RelationBoxHead,
    SqueezeExcitation,
)
from tests.layer_contract import randomise_weights
from tests.sample_photos import sample_photos
from tests.trained_digits import trained_digits_model

FORMATS = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
# Whole applications export in the slow run (3+ minutes each); the default run exports
# every image layer (every_image_layer_model), and test_cli a package LR-Net.
FAST_APPLICATIONS = ()
APPLICATION_IMAGE_SIZE = 64  # every stage stays > 1 pixel; conversion time is size-free


def every_image_layer_model(size=32):
    """Stem, local relation (stride 1 and 2), GC, SE, NL, classifier: one small net."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = LocalRelation2D(kernel_size=7, channels_per_group=4, implementation="xla")(x)
    x = LocalRelation2D(kernel_size=5, strides=2, channels_per_group=8)(x)
    x = keras.layers.Conv2D(32, 1)(x)
    x = GlobalContext(ratio=1 / 4)(x)
    x = SqueezeExcitation(ratio=1 / 4)(x)
    x = NonLocal2D()(x)
    outputs = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    for layer in model.layers[3:-2]:
        randomise_weights(layer, seed=len(layer.name), scale=0.2)
    return model


def random_boxes(rng, batch, count, extent=100.0):
    corner = rng.uniform(0, extent, size=(batch, count, 2))
    size = rng.uniform(extent / 20, extent / 2, size=(batch, count, 2))
    return np.concatenate([corner, corner + size], -1).astype("float32")


def assert_exports_match(model, inputs_for_batch, tmp_path, atol=1e-4):
    """Every format, batch sizes 1 and 3: the artefact reproduces Keras."""
    for format, name in FORMATS.items():
        path = export(model, tmp_path / name, format=format)
        for batch in (1, 3):
            inputs = inputs_for_batch(batch)
            want = model.predict(inputs, verbose=0)
            got = run_exported(path, inputs)
            for got_part, want_part in zip(*(
                    (t if isinstance(t, list) else [t]) for t in (got, want))):
                np.testing.assert_allclose(got_part, want_part, atol=atol,
                                           err_msg=f"{format}, batch {batch}")
        if format == "tflite":
            assert tflite_custom_operators(path) == []


def application_parameters():
    return [name if name in FAST_APPLICATIONS else pytest.param(name, marks=pytest.mark.slow)
            for name in sorted(MODELS)]


@pytest.mark.parametrize("name", application_parameters())
def test_application_exports_match_keras_on_photos(name, tmp_path):
    size = APPLICATION_IMAGE_SIZE
    model = build_model(name, input_shape=(size, size, 3), classifier_activation=None)
    photos = preprocess_input(sample_photos(size))
    assert_exports_match(model, lambda batch: photos[:batch], tmp_path)
    # Each weight is saved once (Keras' own `model.export` saves it twice).
    variables = tmp_path / FORMATS["saved_model"] / "variables"
    stored = sum(f.stat().st_size for f in variables.iterdir())
    assert stored < 1.05 * 4 * model.count_params()


def object_relation_model(width=16, query_chunk_size=256):
    features = keras.Input((None, width), name="features")
    boxes = keras.Input((None, 4), name="boxes")
    related = ObjectRelation(num_heads=4, residual=True,
                             query_chunk_size=query_chunk_size)(features, boxes)
    model = keras.Model([features, boxes], keras.layers.Dense(3)(related))
    randomise_weights(model.layers[2], scale=0.2)
    return model


def detection_head_model():
    """Learnable region features -> 2fc+RM relation box head, dynamic RoI count."""
    feature_map = keras.Input((16, 16, 8), name="feature_map")
    boxes = keras.Input((None, 4), name="boxes")
    crops = LearnableRegionFeatures(output_size=3, feature_stride=4.0)(feature_map, boxes)
    head = RelationBoxHead(num_classes=3, fc_dim=32, num_heads=4)
    model = keras.Model([feature_map, boxes], list(head(crops, boxes)))
    for layer in model.layers[2:]:
        randomise_weights(layer, scale=0.1)
    return model


def duplicate_removal_model():
    """Learned NMS scoring: per-class top-k RoIs -> relation -> s0 * s1."""
    scores = keras.Input((None, 3), name="scores")
    boxes = keras.Input((None, 4), name="boxes")
    features = keras.Input((None, 16), name="features")
    network = DuplicateRemoval(top_k=5, embedding_dim=16, rank_dim=16, num_heads=2, key_dim=8)
    model = keras.Model([scores, boxes, features], network(scores, boxes, features)["scores"])
    randomise_weights(network, scale=0.3)
    return model


def test_detection_head_exports_match_keras(tmp_path):
    rng = np.random.default_rng(1)
    model = detection_head_model()
    assert_exports_match(model, lambda batch: {
        "feature_map": rng.normal(size=(batch, 16, 16, 8)).astype("float32"),
        "boxes": random_boxes(rng, batch, 4 + 3 * batch, extent=48.0)}, tmp_path)


def test_duplicate_removal_exports_match_keras(tmp_path):
    rng = np.random.default_rng(2)
    model = duplicate_removal_model()
    assert_exports_match(model, lambda batch: {
        "scores": rng.uniform(size=(batch, 9, 3)).astype("float32"),
        "boxes": random_boxes(rng, batch, 9),
        "features": rng.normal(size=(batch, 9, 16)).astype("float32")}, tmp_path)


@pytest.fixture(scope="module")
def photos():
    return sample_photos(32)


def test_every_image_layer_exports_match_keras_on_photos(photos, tmp_path):
    model = every_image_layer_model()
    assert_exports_match(model, lambda batch: photos[:batch], tmp_path)
    assert "WHILE" not in tflite_operators(tmp_path / FORMATS["tflite"])
    # Kernel-free: even the layer asking for "xla" exports plain ops.
    assert saved_model_constructs(tmp_path / FORMATS["saved_model"]) & {
        "While", "StatelessWhile", "TensorListReserve", "XlaLaunch", "_XlaMustCompile"} == set()


def saved_model_constructs(path):
    """Op types and True boolean attributes of every node of a SavedModel."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {n.op for n in nodes} | {name for n in nodes for name, value in n.attr.items()
                                    if value.WhichOneof("value") == "b" and value.b}


@pytest.mark.parametrize("format", list(FORMATS))
def test_object_relation_model_with_dynamic_object_count(format, tmp_path):
    model = object_relation_model(query_chunk_size=4)  # 9 objects: three chunks
    path = export(model, tmp_path / FORMATS[format], format=format)
    rng = np.random.default_rng(0)
    for batch, count in ((1, 5), (3, 9)):
        inputs = {"features": rng.normal(size=(batch, count, 16)).astype("float32"),
                  "boxes": random_boxes(rng, batch, count)}
        want = model.predict(inputs, verbose=0)
        np.testing.assert_allclose(run_exported(path, inputs), want, atol=1e-4)
        if format != "tflite":  # SavedModel and ONNX keep the model's input order
            as_list = [inputs["features"], inputs["boxes"]]
            np.testing.assert_allclose(run_exported(path, as_list), want, atol=1e-4)
    if format == "tflite":
        assert tflite_custom_operators(path) == []
        with pytest.raises(ValueError, match="dict keyed by"):
            run_exported(path, [inputs["features"], inputs["boxes"]])
        # int8 calibration feeds the inputs by name (fed by position, the
        # converter's name order would put boxes into features and fail).
        calibration = [rng.normal(size=(8, 6, 16)).astype("float32"), random_boxes(rng, 8, 6)]
        int8 = export(model, tmp_path / "int8.tflite", format="tflite", quantization="int8",
                      representative_data=calibration)
        got = run_exported(int8, inputs)
        assert got.shape == want.shape and np.isfinite(got).all()


PEAK_MEMORY = """
import sys, numpy as np
path, count = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
corner, size = rng.uniform(0, 100, (1, count, 2)), rng.uniform(5, 50, (1, count, 2))
inputs = {"features": rng.normal(size=(1, count, 64)).astype("float32"),
          "boxes": np.concatenate([corner, corner + size], -1).astype("float32")}
if path.endswith(".onnx"):
    import onnxruntime
    onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, inputs)
else:
    from ai_edge_litert.interpreter import Interpreter
    Interpreter(model_path=path).get_signature_runner()(**inputs)
# VmHWM: this process's peak (ru_maxrss would include the forking parent's).
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]) // 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's VmHWM")
@pytest.mark.parametrize("format", ["tflite", "onnx"])
def test_exported_object_relation_keeps_bounded_memory_at_large_n(format, tmp_path):
    # 3000 objects: unchunked, the geometry embedding alone is 3000^2 x 64
    # floats (2.3 GB), and the runtimes peaked at 4.9-5.3 GB; in chunks of 256
    # queries, about 0.5 GB.
    path = export(object_relation_model(width=64), tmp_path / FORMATS[format])
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY, str(path), "3000"],
                            capture_output=True, text=True, check=True)
    assert int(result.stdout.split()[-1]) < 1200  # MiB


def test_quantised_tflite_is_builtin_and_close(photos, tmp_path):
    model = every_image_layer_model()
    want = model.predict(photos, verbose=0)
    half = export(model, tmp_path / "half.tflite", format="tflite", quantization="float16")
    np.testing.assert_allclose(run_exported(half, photos), want, atol=1e-2)
    dynamic = export(model, tmp_path / "dynamic.tflite", format="tflite",
                     quantization="dynamic_int8")
    np.testing.assert_allclose(run_exported(dynamic, photos), want, atol=5e-2)
    int8 = export(model, tmp_path / "int8.tflite", format="tflite", quantization="int8",
                  representative_data=sample_photos(32, 18))
    for path in (half, dynamic, int8):
        assert tflite_custom_operators(path) == []
    got = run_exported(int8, photos)
    assert np.isfinite(got).all() and np.abs(got - want).mean() < 0.2 * np.abs(want).mean()


def test_int8_keeps_the_top1_of_a_trained_model(tmp_path):
    model, (x_train, _), (x_test, _) = trained_digits_model()
    int8_path = export(model, tmp_path / "int8.tflite", format="tflite", quantization="int8",
                       representative_data=x_train[:200])
    want = model.predict(x_test, verbose=0).argmax(-1)
    agreement = np.mean(run_exported(int8_path, x_test).argmax(-1) == want)
    print(f"int8 top-1 agreement with float: {agreement:.3f}")
    assert agreement >= 0.9, agreement


def test_bad_requests_raise_value_error_and_leave_nothing(photos, tmp_path):
    model = every_image_layer_model()
    cases = [
        (dict(format="tflite2"), "`format`"),
        (dict(format="tflite", quantization="int4"), "`quantization`"),
        (dict(format="onnx", quantization="float16"), "`quantization`"),
        (dict(format="tflite", quantization="int8"), "`representative_data`"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            export(model, tmp_path / "model.tflite", **arguments)
    existing = tmp_path / "existing.onnx"
    existing.write_text("keep me")
    with pytest.raises(ValueError, match="`path`.*overwrite=True"):
        export(model, existing, format="onnx")
    assert existing.read_text() == "keep me"
    for wrong in ([sample_photos(32, 2)] * 2, sample_photos(16, 2), {"pixels": photos}):
        with pytest.raises(ValueError, match="`representative_data`"):
            export(model, tmp_path / "int8.tflite", format="tflite", quantization="int8",
                   representative_data=wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.onnx"]


def test_the_format_comes_from_the_suffix_and_must_match_it(tmp_path):
    inputs = keras.Input((4,), name="pixels")
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    x = np.ones((3, 4), "float32")
    for name in ("model.tflite", "model.onnx", "model"):
        path = export(model, tmp_path / name)
        np.testing.assert_allclose(run_exported(path, x), model.predict(x, verbose=0),
                                   atol=1e-5)
    assert tflite_operators(tmp_path / "model.tflite") == ["FULLY_CONNECTED"]
    assert (tmp_path / "model" / "saved_model.pb").exists()
    for name, format, message in [
            ("m.onnx", "tflite", "names format 'onnx', but format='tflite' was requested; "
                                 "name it m.tflite"),
            ("m.tflite", "saved_model", "names format 'tflite'"),
            ("m", "onnx", "must end in .onnx for format='onnx'")]:
        with pytest.raises(ValueError, match=message):
            export(model, tmp_path / "bad" / name, format=format)
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


@pytest.mark.parametrize("name", ["model", "model.tflite", "model.onnx"])
def test_runtimes_reject_inputs_of_another_shape(name, tmp_path):
    path = export(every_image_layer_model(), tmp_path / name)
    run = load_exported(path)
    assert run(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 5)
    for wrong in [(1, 40, 32, 3), (1, 32, 32), (32, 32, 3)]:
        with pytest.raises(ValueError, match=r"input '\w+' of this artefact must "
                                             r"have shape \(None, 32, 32, 3\)"):
            run(np.zeros(wrong, "float32"))
    # NumPy's default float64 and uint8 pixels are cast, as Keras casts them.
    pixels = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3))
    want = run(pixels.astype("float32"))
    np.testing.assert_array_equal(run(pixels.astype("float64")), want)
    np.testing.assert_array_equal(run(pixels.astype("uint8")), want)
    with pytest.raises(ValueError, match=r"input '\w+' of this artefact must be float32; "
                                         r"received str"):
        run(np.full((1, 32, 32, 3), "a"))


def test_failed_conversion_leaves_nothing(tmp_path):
    inputs = keras.Input((4,))
    # The converter cannot lower Lgamma with a dynamic batch to builtins.
    model = keras.Model(inputs, keras.layers.Lambda(tf.math.lgamma)(inputs))
    with pytest.raises(Exception, match="Could not translate MLIR to FlatBuffer"):
        export(model, tmp_path / "model.tflite", format="tflite")
    assert list(tmp_path.iterdir()) == []
