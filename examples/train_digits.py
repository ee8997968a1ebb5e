"""The keras-relnet demo: train a convolution-free LR-Net on real digits.

scikit-learn ships 1,797 8x8 handwritten digits (no download). They are
upsampled to 32x32; a width-0.25 LR-Net-26 (every spatial convolution is a 7x7
local relation layer) is trained with `model.fit` (seeded, with
`enable_op_determinism()`: the same seed gives the same weights on one
machine), must reach >= 95% validation accuracy, is saved as `.keras`,
reloaded and re-evaluated, and the reloaded model must give the same
accuracy. It is then exported to TFLite (float32, float16, full int8) and
ONNX; each artefact runs on the validation digits and is held to the criteria
of `digits_checks.py`: float32 within 1e-4 of Keras; float16 within 2e-2 on the
clear digits (Keras' top-1 ahead by 0.8) and 1e-3 on average; int8 agreeing
with Keras' top-1 on >= 99% of the clear digits, within 3 points of its
accuracy and within 1e-2 on average. Last, three broken exports
(`digits_mutations.py`) must each fail those checks.

Run: `make demo` (or `.venv/bin/python examples/train_digits.py`).
"""

import argparse
import hashlib
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

import digits_checks  # noqa: E402
import digits_mutations  # noqa: E402
from keras_relnet.applications import LRNet26  # noqa: E402
from keras_relnet.export import export, run_exported, tflite_custom_operators  # noqa: E402
from keras_relnet.ops.local_relation import explain  # noqa: E402
from keras_relnet.utils import count_flops  # noqa: E402

IMAGE_SIZE = 32
BATCH_SIZE = 64
# (file, export arguments, precision the checks hold it to).
EXPORTS = (
    ("lrnet26_digits.tflite", dict(format="tflite"), "float32"),
    ("lrnet26_digits_float16.tflite", dict(format="tflite", quantization="float16"), "float16"),
    ("lrnet26_digits_int8.tflite", dict(format="tflite", quantization="int8"), "int8"),
    ("lrnet26_digits.onnx", dict(format="onnx"), "float32"),
)


def digits_dataset(seed):
    """Train/validation split of scikit-learn's digits as 32x32x1 in [0, 1]."""
    digits = load_digits()
    images = digits.images.astype("float32")[..., None] / 16.0
    images = tf.image.resize(images, (IMAGE_SIZE, IMAGE_SIZE)).numpy()
    return train_test_split(images, digits.target, test_size=0.2,
                            stratify=digits.target, random_state=seed)


def training_batches(images, labels, batch_size, seed):
    """Shuffled training batches, augmented with shifts of up to 2 pixels."""
    augment = keras.layers.RandomTranslation(
        2 / IMAGE_SIZE, 2 / IMAGE_SIZE, fill_mode="constant", seed=seed)
    return (tf.data.Dataset.from_tensor_slices((images, labels))
            .shuffle(len(images), seed=seed)
            .batch(batch_size)
            .map(lambda x, y: (augment(x, training=True), y))
            .prefetch(tf.data.AUTOTUNE))


def build_model(steps, implementation):
    model = LRNet26(weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 1), classes=10,
                    width_multiplier=0.25,
                    relation_options={"implementation": implementation})
    schedule = keras.optimizers.schedules.CosineDecay(3e-3, decay_steps=steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def weights_digest(model):
    """A short hash of every weight's bytes: equal for bit-identical models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def check_artefact(path, precision, want, x_val, y_val):
    """Runs one artefact on the validation digits: `(report, failures)`; the
    report holds its outputs too, as "outputs"."""
    path = pathlib.Path(path)
    got = run_exported(path, x_val)
    report = digits_checks.parity_report(got, want, y_val)
    failures = digits_checks.parity_failures(path.name, precision, report)
    if path.suffix == ".tflite" and tflite_custom_operators(path):
        failures.append(f"{path.name} needs non-builtin operators "
                        f"{tflite_custom_operators(path)}")
    return {**report, "outputs": got}, failures


def check_exports(model, directory, x_train, x_val, y_val):
    """Exports `model` in every `EXPORTS` form and checks each on the
    validation digits; prints a line each. Returns `(Keras' outputs, reports
    by artefact, failures)`."""
    want = model.predict(x_val, verbose=0)
    reports, failures = {}, []
    print(f"\n{'artefact':32s} {'MB':>6s}  parity on {len(x_val)} validation digits")
    for name, arguments, precision in EXPORTS:
        calibration = x_train[:200] if precision == "int8" else None
        path = pathlib.Path(export(model, directory / name, overwrite=True,
                                   representative_data=calibration, **arguments))
        report, failed = check_artefact(path, precision, want, x_val, y_val)
        reports[name], failures = report, failures + failed
        size = os.path.getsize(path) / 1e6
        if precision == "float16":
            print(f"{name:32s} {size:6.2f}  max |exported - Keras| "
                  f"{report['clear_max_difference']:.1e} on the "
                  f"{report['clear_fraction']:.0%} clear digits "
                  f"({report['max_difference']:.1e} on all), mean {report['mean_difference']:.1e}")
        elif precision == "int8":
            print(f"{name:32s} {size:6.2f}  top-1 agreement {report['agreement']:.4f} "
                  f"({report['clear_agreement']:.4f} on the {report['clear_fraction']:.0%} "
                  f"clear digits), accuracy {report['accuracy']:.4f}, "
                  f"mean |int8 - Keras| {report['mean_difference']:.1e}")
        else:
            print(f"{name:32s} {size:6.2f}  max |exported - Keras| "
                  f"{report['max_difference']:.1e}")
    return want, reports, failures


def check_mutations(model, directory, x_train, want, x_val, y_val):
    """Makes each broken export of `digits_mutations` and checks it like the
    real ones (against Keras' outputs `want`); returns the failures (a
    mutation that passes the checks)."""
    mutants = (
        ("int8 calibrated on zeros", "int8",
         lambda: digits_mutations.calibrated_on_zeros(model, directory, x_train)),
        ("int8 with its first filter scale doubled", "int8",
         lambda: digits_mutations.scale_doubled(directory / "lrnet26_digits_int8.tflite",
                                                directory)),
        ("float32 with one weight x1.05", "float32",
         lambda: digits_mutations.weight_perturbed(directory / "lrnet26_digits.tflite",
                                                   directory)),
    )
    print("\nbroken exports (each must fail the checks):")
    failures = []
    for description, precision, make in mutants:
        path = pathlib.Path(make())
        _, caught = check_artefact(path, precision, want, x_val, y_val)
        print(f"  {description:42s} " + (f"caught: {caught[0]}" if caught else "NOT CAUGHT"))
        if not caught:
            failures.append(f"the checks pass a broken export ({description})")
        path.unlink()
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--output-dir", default="build/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--implementation", default="auto",
                        choices=("auto", "custom", "xla", "reference"),
                        help="local relation implementation of every layer")
    parser.add_argument("--skip-mutations", action="store_true",
                        help="do not check that broken exports fail")
    parser.add_argument("--metrics", help="also write the measured numbers to this JSON file")
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    x_train, x_val, y_train, y_val = digits_dataset(args.seed)
    train = training_batches(x_train, y_train, BATCH_SIZE, args.seed)
    model = build_model(args.epochs * len(train), args.implementation)
    print(f"LR-Net-26 x0.25: {model.count_params():,} parameters, "
          f"{count_flops(model) / 1e6:.1f}M multiply-adds per {IMAGE_SIZE}x{IMAGE_SIZE} image; "
          f"{len(x_train)} training and {len(x_val)} validation digits; seed {args.seed}.")
    explanation = explain(args.implementation).splitlines()
    kernel = f"{explanation[0]}; {explanation[-1]}"
    print(f"local relation: {kernel}")

    start = time.perf_counter()
    model.fit(train, validation_data=(x_val, y_val), epochs=args.epochs,
              verbose=2 if os.environ.get("CI") else 1)
    train_seconds = time.perf_counter() - start
    accuracy = digits_checks.accuracy(model.predict(x_val, verbose=0), y_val)

    directory = pathlib.Path(args.output_dir)
    path = directory / "lrnet26_digits.keras"
    directory.mkdir(parents=True, exist_ok=True)
    model.save(path)
    restored = keras.models.load_model(path)
    restored_accuracy = digits_checks.accuracy(restored.predict(x_val, verbose=0), y_val)

    digest = weights_digest(model)
    print(f"\ntrained in {train_seconds:.0f} s; validation accuracy {accuracy:.4f}; "
          f"weights {digest}")
    print(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB); reloaded accuracy "
          f"{restored_accuracy:.4f}")
    want, reports, failures = check_exports(model, directory, x_train, x_val, y_val)
    if accuracy < digits_checks.TARGET_ACCURACY:
        failures.append(f"validation accuracy {accuracy:.4f} < {digits_checks.TARGET_ACCURACY}")
    if abs(restored_accuracy - accuracy) > 1e-6:
        failures.append(f"reloaded accuracy {restored_accuracy:.4f} != {accuracy:.4f}")
    if not args.skip_mutations:
        failures += check_mutations(model, directory, x_train, want, x_val, y_val)
    if args.metrics:  # with every output, so criteria can be chosen again from them
        outputs = {name: report.pop("outputs").tolist() for name, report in reports.items()}
        pathlib.Path(args.metrics).write_text(json.dumps({
            "seed": args.seed, "implementation": args.implementation, "kernel": kernel,
            "accuracy": accuracy, "train_seconds": train_seconds, "weights": digest,
            "artefacts": reports, "failures": failures, "labels": y_val.tolist(),
            "keras_outputs": want.tolist(), "artefact_outputs": outputs}))
    if failures:
        print("DEMO FAILED: " + "; ".join(failures))
        return 1
    print("DEMO OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
