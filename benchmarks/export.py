"""Exported models: file size and latency of TFLite and ONNX against Keras.

For each model, in one run: the size of the SavedModel, the float32, float16
and int8 TFLite files and the ONNX file; the median latency of Keras
`predict_on_batch`, the LiteRT interpreter (XNNPACK, this machine's cores),
and onnxruntime (CPU), each on the same batch of bundled photos; and the
largest |exported - Keras| of the float32 artefacts. Ratios are latency over
Keras' in the same run.

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
from keras_relnet.export import artefact_size, export, load_exported  # noqa: E402
from keras_relnet.layers import ObjectRelation  # noqa: E402
from tests.layer_contract import randomise_weights  # noqa: E402
from tests.sample_photos import sample_photos  # noqa: E402
from timing import median_ms  # noqa: E402

DEFAULT_MODELS = ("lrnet26", "lrnet50", "resnet50", "gc_resnet50", "se_resnet50",
                  "nl_resnet50", "object_relation")


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


def benchmark(name, args, directory):
    model, inputs, calibration = model_and_inputs(name, args.image_size, args.batch,
                                                  args.rois, args.quick)
    want = model.predict_on_batch(inputs)
    row = {"model": name, "params": model.count_params()}
    row["keras_ms"] = median_ms(lambda: model.predict_on_batch(inputs), args.repeats)
    for label, format, quantization in (("saved_model", "saved_model", None),
                                        ("tflite", "tflite", None),
                                        ("tflite_fp16", "tflite", "float16"),
                                        ("tflite_int8", "tflite", "int8"),
                                        ("onnx", "onnx", None)):
        path = export(model, directory / f"{name}_{label}" if format == "saved_model" else
                      directory / f"{name}_{label}.{format}", format=format,
                      quantization=quantization,
                      representative_data=calibration if quantization == "int8" else None)
        row[f"{label}_mb"] = artefact_size(path) / 1e6
        if label in ("tflite", "onnx"):
            run = load_exported(path)
            row[f"{label}_error"] = float(np.abs(run(inputs) - want).max())
            row[f"{label}_ms"] = median_ms(lambda: run(inputs), args.repeats)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rois", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="LR-Net-26 at 64x64 and a small relation module, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.models, args.image_size, args.rois, args.repeats = (
            ["lrnet26", "object_relation"], 64, 32, 3)

    print(f"batch {args.batch}; images {args.image_size}x{args.image_size}; relation module: "
          f"N = {args.rois}; median of {args.repeats}; sizes in MB")
    header = (f"{'model':16s} {'params':>11s} {'SavedModel':>10s} {'TFLite':>7s} {'fp16':>6s} "
              f"{'int8':>6s} {'ONNX':>7s} {'Keras ms':>9s} {'TFLite ms':>10s} {'ratio':>6s} "
              f"{'ONNX ms':>8s} {'ratio':>6s} {'max |TFLite-Keras|':>19s} "
              f"{'max |ONNX-Keras|':>17s}")
    print(header)
    with tempfile.TemporaryDirectory() as directory:
        for name in args.models:
            r = benchmark(name, args, pathlib.Path(directory))
            print(f"{r['model']:16s} {r['params']:11,d} {r['saved_model_mb']:10.1f} "
                  f"{r['tflite_mb']:7.1f} {r['tflite_fp16_mb']:6.1f} {r['tflite_int8_mb']:6.1f} "
                  f"{r['onnx_mb']:7.1f} {r['keras_ms']:9.1f} {r['tflite_ms']:10.1f} "
                  f"{r['tflite_ms'] / r['keras_ms']:5.2f}x {r['onnx_ms']:8.1f} "
                  f"{r['onnx_ms'] / r['keras_ms']:5.2f}x {r['tflite_error']:19.1e} "
                  f"{r['onnx_error']:17.1e}", flush=True)


if __name__ == "__main__":
    main()
