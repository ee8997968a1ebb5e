"""Exported models: latency against ResNet-50, graph shape, file sizes, parity.

For each model, in one run: the TFLite float32 and int8 and the ONNX
artefacts (plus the SavedModel and float16 TFLite sizes); their operator
counts, XNNPACK partitions and the operators XNNPACK leaves outside; the
largest |exported - Keras| of the float artefacts and the int8 one's mean
relative error; and the median latency of Keras `predict_on_batch`, the LiteRT
interpreter (XNNPACK, this machine's cores) and onnxruntime (CPU), measured
in interleaved rounds (every artefact once per round, so machine noise hits
all alike). Ratios are latency over ResNet-50's in the same runtime and run
(over Keras' when ResNet-50 is not benchmarked). onnxruntime runs with its
threads not spinning between calls: spinning threads would steal the cores of
the interpreter timed next.

Run: `make bench` or `.venv/bin/python benchmarks/export.py [--quick] [--models ...]`.
"""

import argparse
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from keras_relnet.applications import preprocess_input  # noqa: E402
from keras_relnet.applications.registry import build_model  # noqa: E402
from timing import interleaved_medians  # noqa: E402
from keras_relnet.export import (  # noqa: E402
    artefact_size,
    export,
    load_exported,
    onnx_operator_counts,
    onnx_session_options,
    tflite_delegation,
)
from keras_relnet.layers import ObjectRelation  # noqa: E402
from tests.layer_contract import randomise_weights  # noqa: E402
from tests.sample_photos import sample_photos  # noqa: E402

DEFAULT_MODELS = ("resnet50", "lrnet26", "lrnet50")
BASELINE = "resnet50"
# (label, format, quantization); the timed ones are TIMED.
ARTEFACTS = (("saved_model", "saved_model", None), ("tflite", "tflite", None),
             ("tflite_fp16", "tflite", "float16"), ("tflite_int8", "tflite", "int8"),
             ("onnx", "onnx", None))
TIMED = ("keras", "tflite", "tflite_int8", "onnx")


def relation_model(width, heads):
    """One object relation module over `[B, N, width]` features and boxes, with
    random weights: at initialisation its output projection is zero, and the
    converters would prune the whole module away."""
    features = keras.Input((None, width), name="features")
    boxes = keras.Input((None, 4), name="boxes")
    model = keras.Model([features, boxes],
                        ObjectRelation(num_heads=heads, residual=True)(features, boxes))
    randomise_weights(model, scale=width ** -0.5)
    return model


def model_and_inputs(name, image_size, batch, rois, quick):
    """`(model, inputs, calibration)` for a package model or the relation module."""
    if name == "object_relation":
        width, heads = (64, 4) if quick else (1024, 16)
        rng = np.random.default_rng(0)
        make = lambda count: {
            "features": rng.normal(size=(count, rois, width)).astype("float32"),
            "boxes": np.concatenate([corner := rng.uniform(0, 800, (count, rois, 2)),
                                     corner + rng.uniform(16, 300, (count, rois, 2))],
                                    -1).astype("float32")}
        return relation_model(width, heads), make(batch), [make(16)[k] for k in ("features",
                                                                                 "boxes")]
    model = build_model(name, input_shape=(image_size, image_size, 3),
                        classifier_activation=None)
    photos = preprocess_input(sample_photos(image_size, 18))
    return model, photos[:batch], photos


def onnx_runner(path, inputs):
    import onnxruntime

    options = onnx_session_options()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    # The artefact's inputs are named after the model's (`input_names`).
    feeds = inputs if isinstance(inputs, dict) else {session.get_inputs()[0].name: inputs}
    return lambda: session.run(None, feeds)[0]


def prepare(name, args, directory):
    """Exports `name`; returns its table row and `{timed label: step}`."""
    model, inputs, calibration = model_and_inputs(name, args.image_size, args.batch,
                                                  args.rois, args.quick)
    want = model.predict_on_batch(inputs)
    row = {"model": name, "params": model.count_params()}
    steps = {"keras": lambda: model.predict_on_batch(inputs)}
    for label, format, quantization in ARTEFACTS:
        path = export(model, directory / f"{name}_{label}" if format == "saved_model" else
                      directory / f"{name}_{label}.{format}", format=format,
                      quantization=quantization,
                      representative_data=calibration if quantization == "int8" else None)
        row[f"{label}_mb"] = artefact_size(path) / 1e6
        if label not in TIMED:
            continue
        run = load_exported(path)
        steps[label] = onnx_runner(path, inputs) if label == "onnx" else lambda run=run: run(
            inputs)
        error = np.abs(run(inputs) - want)
        if label == "tflite_int8":
            row["int8_relative_error"] = float(error.mean() / np.abs(want).mean())
        else:
            row[f"{label}_error"] = float(error.max())
        if label == "tflite":
            stats = tflite_delegation(path)
            row["tflite_ops"] = sum(stats.operators.values())
            row["partitions"] = stats.partitions
            row["outside"] = ", ".join(f"{op} {count}" for op, count in
                                       sorted(stats.outside.items())) or "-"
        if label == "onnx":
            row["onnx_nodes"] = sum(onnx_operator_counts(path).values())
    return row, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="also: gc_resnet50, se_resnet50, nl_resnet50, object_relation, ...")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rois", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="ResNet-50 and LR-Net-26 at 64x64, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.models, args.image_size, args.repeats = ["resnet50", "lrnet26"], 64, 3

    rows, steps = [], {}
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models:
            row, model_steps = prepare(name, args, pathlib.Path(directory))
            rows.append(row)
            steps.update({(name, label): step for label, step in model_steps.items()})
        medians = interleaved_medians(steps, args.repeats)

    print(f"batch {args.batch}; images {args.image_size}x{args.image_size}; relation module: "
          f"N = {args.rois}; median of {args.repeats} interleaved rounds; sizes in MB")
    base = BASELINE if BASELINE in args.models else None
    print(f"\nLatency, ms (ratio to {base or 'Keras'} in the same runtime)")
    print(f"{'model':16s}" + "".join(f"{label:>22s}" for label in TIMED))
    for row in rows:
        cells = []
        for label in TIMED:
            ms = medians[(row["model"], label)]
            reference = medians[(base, label)] if base else medians[(row["model"], "keras")]
            cells.append(f"{ms:12.1f} ({ms / reference:5.2f}x)")
        print(f"{row['model']:16s}" + "".join(f"{cell:>22s}" for cell in cells))

    print("\nGraphs, sizes and parity")
    print(f"{'model':16s} {'params':>11s} {'TFLite ops':>10s} {'partitions':>10s} "
          f"{'ONNX nodes':>10s} {'SavedModel':>10s} {'TFLite':>7s} {'fp16':>6s} {'int8':>6s} "
          f"{'ONNX':>7s} {'max|TFLite-Keras|':>18s} {'max|ONNX-Keras|':>16s} "
          f"{'int8 rel. error':>15s}  outside XNNPACK")
    for r in rows:
        print(f"{r['model']:16s} {r['params']:11,d} {r['tflite_ops']:10d} {r['partitions']:10d} "
              f"{r['onnx_nodes']:10d} {r['saved_model_mb']:10.1f} {r['tflite_mb']:7.1f} "
              f"{r['tflite_fp16_mb']:6.1f} {r['tflite_int8_mb']:6.1f} {r['onnx_mb']:7.1f} "
              f"{r['tflite_error']:18.1e} {r['onnx_error']:16.1e} "
              f"{r['int8_relative_error']:15.3f}  {r['outside']}")
    check(rows)


def check(rows):
    """Fails the run when a float artefact does not reproduce Keras."""
    for row in rows:
        for label in ("tflite", "onnx"):
            if not row[f"{label}_error"] <= 1e-4:
                raise SystemExit(f"{row['model']} {label}: max |exported - Keras| "
                                 f"{row[f'{label}_error']:.1e} > 1e-4")


if __name__ == "__main__":
    main()
