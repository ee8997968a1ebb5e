"""`keras-relnet export`: a package model or a `.keras` file to an artefact."""

import pathlib
import shutil

import numpy as np

from keras_relnet.applications.registry import load_model
from keras_relnet.export.exporter import FORMATS, QUANTIZATIONS, export
from keras_relnet.export.runtimes import artefact_size, run_exported


def add_arguments(parser):
    """Adds the `export` command's arguments to an argparse parser."""
    from keras_relnet.applications.registry import MODELS

    parser.add_argument("--model", required=True,
                        help=f"a package model ({', '.join(sorted(MODELS))}) or a .keras file")
    parser.add_argument("--weights", help="weights file for a package model "
                                          "(from model.save_weights); default: random")
    parser.add_argument("--classes", type=int, default=1000,
                        help="classifier size of a package model (default 1000)")
    parser.add_argument("--input-size", type=int, default=224,
                        help="image height and width of a package model (default 224)")
    parser.add_argument("--width-multiplier", type=float,
                        help="LR-Net width multiplier of a package model (default: the model's)")
    parser.add_argument("--format", choices=FORMATS,
                        help="default: from the --output suffix (.tflite, .onnx, else a "
                             "SavedModel directory)")
    parser.add_argument("--quantization", choices=[q for q in QUANTIZATIONS if q])
    parser.add_argument("--representative-data",
                        help=".npy array [N, ...] of typical inputs (needed for int8)")
    parser.add_argument("--output", required=True, help="file or directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --output")


def run(args):
    """Builds or loads the model, exports it, checks it against Keras; a
    failed export or check leaves nothing at `--output`.

    Returns:
        The process exit code (0).
    """
    if pathlib.Path(args.output).exists() and not args.overwrite:  # before a slow load
        raise ValueError(f"--output {args.output} already exists; pass --overwrite to "
                         "replace it.")
    samples = None
    if args.representative_data:
        samples = load_array("--representative-data", args.representative_data)
    model = load_model(args.model, args.weights, args.classes, args.input_size,
                       width_multiplier=args.width_multiplier)
    check = samples[:4] if samples is not None else _random_inputs(model)
    path = export(model, args.output, format=args.format, quantization=args.quantization,
                  representative_data=samples, overwrite=args.overwrite)
    try:
        difference = np.max(np.abs(np.asarray(run_exported(path, check))
                                   - np.asarray(model.predict(check, verbose=0))))
    except Exception:
        _remove(path)
        raise
    print(f"wrote {path} ({artefact_size(path) / 1e6:.2f} MB); max |exported - Keras| on "
          f"{len(check)} inputs: {difference:.2e}")
    return 0


def load_array(option, path):
    """The NumPy array in the `.npy` file `path`, or a ValueError naming `option`.

    Example:
    >>> load_array("--representative-data", "/no/such.npy")
    Traceback (most recent call last):
    ...
    ValueError: --representative-data /no/such.npy: no such file.
    """
    if not pathlib.Path(path).is_file():
        raise ValueError(f"{option} {path}: no such file.")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:  # not an .npy file (text, pickle, truncated)
        raise ValueError(f"{option} {path} is not a NumPy .npy array file "
                         f"(write one with numpy.save): {error}") from None


def _remove(path):
    path = pathlib.Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _random_inputs(model, count=2):
    rng = np.random.default_rng(0)
    shape = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) > 1 or None in shape:
        raise ValueError("Pass --representative-data to check a model whose inputs are "
                         "several or of unknown size.")
    return rng.uniform(0, 255, size=(count,) + shape).astype("float32")

