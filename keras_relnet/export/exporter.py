"""`export`: a Keras model to SavedModel, TFLite (builtin ops only) or ONNX."""

import os
import pathlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_relnet.export.runtimes import tflite_custom_operators
from keras_relnet.layers import LocalRelation2D, ObjectRelation
from keras_relnet.ops import checks
from keras_relnet.ops.portable import portable_graphs

FORMATS = ("saved_model", "tflite", "onnx")
# The file suffix of each format (a SavedModel is a directory without one).
SUFFIXES = {"tflite": ".tflite", "onnx": ".onnx"}
QUANTIZATIONS = (None, "float16", "dynamic_int8", "int8")
# Layers whose attention arithmetic stays float in an "int8" export: the
# logits (with their -1e30 masks, which no int8 range holds), the softmax and
# the aggregating matmul.
_RELATION_LAYERS = (LocalRelation2D, ObjectRelation)
_FLOAT_IN_INT8 = ["SQUARED_DIFFERENCE", "SQUARE", "SUB", "ABS", "MUL", "ADD", "SOFTMAX",
                  "BATCH_MATMUL"]


def export(model, path, format=None, quantization=None, representative_data=None,
           overwrite=False, onnx_opset=17):
    """Exports `model` with a dynamic batch size; kernel-free graphs only.

    The model is traced inside `portable_graphs()`, so the artefact holds
    only plain TF ops (no custom kernel, no XLA cluster, no TensorList): a
    TFLite file contains only builtin operators and needs no Flex delegate.
    Every format serves one function whose inputs are named after the model
    inputs (`input_names(model)`), batch and other unknown dimensions left
    dynamic. The artefact is written next to `path` and moved into place at
    the end, so a failed export leaves nothing behind.

    Args:
        model: a functional `keras.Model`.
        path: output directory ("saved_model") or file (".tflite", ".onnx").
        format: "saved_model", "tflite" or "onnx"; None takes it from the
            suffix of `path` (none: "saved_model"). A suffix that names
            another format is an error.
        quantization: TFLite only: None (float32), "float16" (float16
            weights), "dynamic_int8" (int8 weights, float activations) or
            "int8" (int8 weights and activations, float32 interface; in
            models with local or object relation layers the elementwise
            attention arithmetic stays float, see `_int8_with_float_attention`).
        representative_data: for "int8": an array `[N, ...]` (or a list of
            arrays in model input order, or a dict keyed by input name) of
            typical inputs that calibrate the activation ranges.
        overwrite: replace an existing `path`.
        onnx_opset: the ONNX opset to target.

    Returns:
        `path` as a string.

    Example:
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> export(model, "/tmp/dense.tflite", overwrite=True)
    '/tmp/dense.tflite'
    """
    if format is not None:
        checks.check_choice("format", format, FORMATS)
    checks.check_choice("quantization", quantization, QUANTIZATIONS)
    if quantization is not None and (format or format_of(path)) != "tflite":
        raise ValueError(f"`quantization` applies to format='tflite' only; received "
                         f"quantization={quantization!r} with format="
                         f"{format or format_of(path)!r}.")
    format = format_of(path, format)
    calibration = None
    if quantization == "int8":
        calibration = _calibration_samples(model, representative_data)
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"`path` {str(path)!r} already exists; pass overwrite=True "
                         "(--overwrite on the command line) to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with portable_graphs():
            written = _WRITERS[format](model, staging, quantization=quantization,
                                       calibration=calibration, onnx_opset=onnx_opset)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        os.replace(written, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(path)


def format_of(path, format=None):
    """The export format for `path`: `format`, checked against the path's suffix.

    Args:
        path: the output path.
        format: None (from the suffix: ".tflite", ".onnx", else "saved_model")
            or one of `FORMATS`.

    Returns:
        One of `FORMATS`.

    Raises:
        ValueError: for an unknown format, or a suffix that names another
            format than `format`.

    Example:
    >>> format_of("model.onnx")
    'onnx'
    >>> format_of("model.onnx", "tflite")
    Traceback (most recent call last):
    ...
    ValueError: The suffix of `path` 'model.onnx' names format 'onnx', but format='tflite' was requested; name it model.tflite or pass format='onnx'.
    """
    suffix = pathlib.Path(path).suffix.lower()
    implied = next((name for name, ending in SUFFIXES.items() if ending == suffix), None)
    if format is None:
        return implied or "saved_model"
    checks.check_choice("format", format, FORMATS)
    expected = SUFFIXES.get(format)
    if implied == format or (implied is None and expected is None):
        return format
    wanted = pathlib.Path(path).with_suffix(expected or "").name
    if implied is None:
        raise ValueError(f"`path` {str(path)!r} must end in {expected} for format={format!r} "
                         f"(the runtimes go by the suffix); name it {wanted}.")
    raise ValueError(f"The suffix of `path` {str(path)!r} names format {implied!r}, but "
                     f"format={format!r} was requested; name it {wanted} or pass "
                     f"format={implied!r}.")


def input_specs(model):
    """`tf.TensorSpec`s of the model inputs, named after them, batch size dynamic.

    Example:
    >>> inputs = keras.Input((4,), name="pixels")
    >>> input_specs(keras.Model(inputs, inputs))
    [TensorSpec(shape=(None, 4), dtype=tf.float32, name='pixels')]
    """
    return [tf.TensorSpec((None,) + tuple(tensor.shape[1:]), tensor.dtype, name=name)
            for tensor, name in zip(model.inputs, input_names(model))]


def input_names(model):
    """The names of the model inputs, in `model.inputs` order: the names the
    exported artefacts give their inputs.

    Example:
    >>> inputs = keras.Input((4,), name="pixels")
    >>> input_names(keras.Model(inputs, inputs))
    ['pixels']
    """
    return [tensor.name.split(":")[0] for tensor in model.inputs]


def serving_function(model):
    """The inference function every format exports: one positional tensor
    per model input (in `model.inputs` order), the model's outputs as a list."""

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else outputs

    return tf.function(serve, input_signature=input_specs(model), autograph=False)


def _write_saved_model(model, staging, **unused):
    target = staging / "saved_model"
    archive = keras.export.ExportArchive()
    # Not `archive.track(model)`: it saves every weight twice (as Keras'
    # `model.export` does); the endpoint's captured variables are saved once.
    archive.add_endpoint("serve", serving_function(model))
    archive.write_out(str(target), verbose=False)
    return target


def _write_tflite(model, staging, quantization, calibration, **unused):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(_write_saved_model(model, staging)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = calibration
    if quantization == "int8" and _has_relation_attention(model):
        flatbuffer = _int8_with_float_attention(converter, calibration)
    else:
        flatbuffer = converter.convert()
    custom = tflite_custom_operators(flatbuffer)
    if custom:
        raise RuntimeError(f"The TFLite model needs non-builtin operators {custom}; it "
                           "would not run on a stock LiteRT interpreter.")
    target = staging / "model.tflite"
    target.write_bytes(flatbuffer)
    return target


def _has_relation_attention(model):
    return any(isinstance(layer, _RELATION_LAYERS) for layer in model._flatten_layers())


def _int8_with_float_attention(converter, calibration):
    """Full int8, except the elementwise attention arithmetic (`_FLOAT_IN_INT8`),
    which stays float between quantize/dequantize pairs.

    Calibrated int8 logits and window sums compound over a deep LR-Net: on the
    digits demo's LR-Net-26, top-1 agreement with float fell to 82%; with
    these ops in float it is 99.7%. Convolutions and dense layers (the
    weights) stay int8.
    """
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=_FLOAT_IN_INT8)
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=calibration, debug_options=options)
    return debugger.get_nondebug_quantized_model()


def _calibration_samples(model, representative_data):
    """The converter's `representative_dataset`: one sample at a time."""
    if representative_data is None:
        raise ValueError("`representative_data` is required for quantization='int8' (it "
                         "calibrates the activation ranges); received None.")
    names = input_names(model)
    if isinstance(representative_data, dict):
        if sorted(representative_data) != sorted(names):
            raise ValueError(f"`representative_data` must be keyed by the model input names "
                             f"{sorted(names)}; received {sorted(representative_data)}.")
        representative_data = [representative_data[name] for name in names]
    arrays = representative_data if isinstance(representative_data, (list, tuple)) else [
        representative_data]
    arrays = [np.asarray(array) for array in arrays]
    for array, name in zip(arrays, names):
        # The converter crashes the process on a NaN (a segmentation fault,
        # leaving its files), so the data is checked before it runs.
        if np.issubdtype(array.dtype, np.number) and not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0].tolist()
            raise ValueError(f"`representative_data` for input {name!r} must be finite; "
                             f"received {int(np.sum(~np.isfinite(array)))} NaN or infinite "
                             f"values, the first at index {bad}.")
    if len(arrays) != len(model.inputs):
        raise ValueError(f"`representative_data` must hold one array per model input "
                         f"({len(model.inputs)}); received {len(arrays)}.")
    for array, tensor, name in zip(arrays, model.inputs, names):
        if not _fits(array.shape, tensor.shape):
            raise ValueError(f"`representative_data` for input {name!r} must have shape "
                             f"{tuple(tensor.shape)}; received {array.shape}.")
    if len({len(array) for array in arrays}) != 1 or len(arrays[0]) == 0:
        raise ValueError("`representative_data` arrays must hold the same, non-zero number "
                         f"of samples; received {[len(array) for array in arrays]}.")

    def samples():
        # Keyed by input name: the converter orders signature inputs by name.
        for index in range(len(arrays[0])):
            yield {name: array[index:index + 1].astype(tensor.dtype)
                   for name, array, tensor in zip(names, arrays, model.inputs)}

    return samples


def _fits(shape, expected):
    return len(shape) == len(expected) and all(
        want is None or got == want for got, want in zip(shape[1:], expected[1:]))


def _write_onnx(model, staging, onnx_opset, **unused):
    import tf2onnx

    target = staging / "model.onnx"
    tf2onnx.convert.from_function(serving_function(model), input_signature=input_specs(model),
                                  opset=onnx_opset, output_path=str(target))
    return target


_WRITERS = {"saved_model": _write_saved_model, "tflite": _write_tflite, "onnx": _write_onnx}
