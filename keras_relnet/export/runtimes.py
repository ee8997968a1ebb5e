"""Running exported models: SavedModel, the LiteRT interpreter, onnxruntime."""

import os
import pathlib

import numpy as np


def run_exported(path, inputs):
    """Runs an artefact written by `export` once on `inputs` (see `load_exported`).

    Example:
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> from keras_relnet.export import export
    >>> path = export(model, "/tmp/dense.onnx", format="onnx", overwrite=True)
    >>> run_exported(path, np.ones((3, 4), "float32")).shape
    (3, 2)
    """
    return load_exported(path)(inputs)


def load_exported(path):
    """Loads an artefact written by `export` with its runtime, by its format:
    `tf.saved_model.load`, the LiteRT interpreter or onnxruntime.

    Args:
        path: a SavedModel directory, a `.tflite` or an `.onnx` file.

    Returns:
        A callable taking `inputs` (an array; a dict of arrays keyed by model
        input name; or a list of arrays in the order of the model's inputs,
        which SavedModel and ONNX keep and TFLite does not, so a multi-input
        TFLite model needs the dict) and returning the model output, or the
        list of outputs in the model's order, as NumPy arrays. An input whose
        shape the artefact cannot take (another rank, or another size where
        the artefact's is fixed) raises a `ValueError` with both shapes.
        Inputs of another numeric type are cast to the artefact's (NumPy's
        float64 to float32, uint8 pixels to float), except floats to an
        integer input, which is a `ValueError` naming both types.

    Example:
    >>> inputs = keras.Input((4,), name="pixels")
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> from keras_relnet.export import export
    >>> run = load_exported(export(model, "/tmp/dense.tflite", format="tflite",
    ...                            overwrite=True))
    >>> run({"pixels": np.ones((1, 4), "float32")}).shape
    (1, 2)
    """
    path = pathlib.Path(path)
    if path.is_dir():
        runner = _SavedModelRunner(path)
    elif path.suffix == ".tflite":
        runner = _TFLiteRunner(path)
    elif path.suffix == ".onnx":
        runner = _OnnxRunner(path)
    else:
        raise ValueError(f"`path` must be a SavedModel directory, a .tflite or an .onnx file; "
                         f"received {str(path)!r}.")

    def run(inputs):
        named = _named_inputs(inputs, runner.input_names, runner.ordered)
        for name, array in named.items():
            _check_shape(name, array.shape, runner.input_shapes[name])
            named[name] = _cast(name, array, runner.input_dtypes[name])
        outputs = runner(named)
        return outputs[0] if len(outputs) == 1 else outputs

    return run


def _check_shape(name, shape, expected):
    """`shape` fits `expected` (None: any size there)."""
    if len(shape) != len(expected) or any(
            want is not None and got != want for got, want in zip(shape, expected)):
        raise ValueError(f"input {name!r} of this artefact must have shape {tuple(expected)} "
                         f"(None: any size); received {tuple(shape)}.")


def _cast(name, array, dtype):
    """`array` as the artefact's input type `dtype` (see `load_exported`)."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    numeric = np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    if not numeric or (np.issubdtype(dtype, np.integer)
                       and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"input {name!r} of this artefact must be {dtype.name}; received "
                         f"{array.dtype.name}.")
    return array.astype(dtype)


# onnxruntime's names of the element types an exported model's inputs take.
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
               "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def _dims(sizes):
    """Static sizes with None where a runtime reports a dynamic one (-1, 0 or a name)."""
    return tuple(size if isinstance(size, int) and size > 0 else None
                 for size in (int(d) if not isinstance(d, (str, type(None))) else d
                              for d in sizes))


def _named_inputs(inputs, names, ordered):
    """`{name: array}` for the artefact's inputs `names`, from a dict, one
    array, or a list in model order (`ordered`: the artefact keeps it)."""
    if isinstance(inputs, dict):
        if sorted(inputs) != sorted(names):
            raise ValueError(f"`inputs` must be keyed by the model input names "
                             f"{sorted(names)}; received {sorted(inputs)}.")
        return {name: np.asarray(array) for name, array in inputs.items()}
    arrays = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if len(arrays) != len(names):
        raise ValueError(f"`inputs` must hold {len(names)} arrays for this model; received "
                         f"{len(arrays)}.")
    if len(arrays) > 1 and not ordered:
        raise ValueError("This artefact does not record the order of its inputs; pass "
                         f"`inputs` as a dict keyed by {sorted(names)}.")
    return {name: np.asarray(array) for name, array in zip(names, arrays)}


def artefact_size(path):
    """Bytes on disk of an exported artefact: a file, or a SavedModel directory.

    Example:
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> from keras_relnet.export import export
    >>> artefact_size(export(model, "/tmp/dense.onnx", format="onnx", overwrite=True)) > 0
    True
    """
    path = pathlib.Path(path)
    files = path.rglob("*") if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file())


def tflite_operators(flatbuffer):
    """The operator names a TFLite flatbuffer uses.

    Args:
        flatbuffer: the model bytes, or a path to a `.tflite` file.

    Returns:
        A sorted list: builtin names such as "CONV_2D", custom ones as
        "CUSTOM:<name>" (Flex ops are "CUSTOM:Flex...").

    Example:
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> from keras_relnet.export import export
    >>> tflite_operators(export(model, "/tmp/dense.tflite", format="tflite", overwrite=True))
    ['FULLY_CONNECTED']
    """
    from tensorflow.lite.python import schema_py_generated as schema

    if isinstance(flatbuffer, (str, pathlib.Path)):
        flatbuffer = pathlib.Path(flatbuffer).read_bytes()
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    builtin_names = {value: name for name, value in vars(schema.BuiltinOperator).items()
                     if not name.startswith("_")}
    names = set()
    for index in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            names.add(f"CUSTOM:{code.CustomCode().decode()}")
        else:
            names.add(builtin_names[builtin])
    return sorted(names)


def tflite_custom_operators(flatbuffer):
    """The non-builtin (custom or Flex) operators of a TFLite flatbuffer.

    Example:
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> from keras_relnet.export import export
    >>> tflite_custom_operators(export(model, "/tmp/dense.tflite", format="tflite",
    ...                                overwrite=True))
    []
    """
    return [name for name in tflite_operators(flatbuffer) if name.startswith("CUSTOM:")]


def onnx_session_options():
    """onnxruntime session options for exported models: denormals flushed to zero.

    A softmax whose inputs lie far below their maximum (masked or negligible
    attention cells) makes onnxruntime's exp produce denormal numbers, which
    x86 CPUs compute tens of times slower; flushing them changes no weight
    by more than 1e-38. Pass these options to your own `InferenceSession`.

    Example:
    >>> onnx_session_options().get_session_config_entry("session.set_denormal_as_zero")
    '1'
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return options


class _SavedModelRunner:
    ordered = True

    def __init__(self, path):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(str(path))  # keep it alive: it owns the variables
        signature = self.loaded.serve.input_signature
        self.input_names = [spec.name for spec in signature]
        self.input_shapes = {spec.name: tuple(spec.shape.as_list()) for spec in signature}
        self.input_dtypes = {spec.name: spec.dtype.as_numpy_dtype for spec in signature}

    def __call__(self, named):
        outputs = self.loaded.serve(*(named[name] for name in self.input_names))
        return [np.asarray(t) for t in (outputs if isinstance(outputs, list) else [outputs])]


class _TFLiteRunner:
    ordered = False  # the converter sorts signature inputs by name

    def __init__(self, path):
        from ai_edge_litert.interpreter import Interpreter

        self.runner = Interpreter(model_path=str(path),
                                  num_threads=os.cpu_count()).get_signature_runner()
        details = self.runner.get_input_details()
        self.input_names = list(details)
        self.input_shapes = {name: _dims(detail["shape_signature"])
                             for name, detail in details.items()}
        self.input_dtypes = {name: detail["dtype"] for name, detail in details.items()}

    def __call__(self, named):
        outputs = self.runner(**named)
        # Outputs are "output_0", "output_1", ...: sort by the number, not the text.
        return [outputs[name] for name in sorted(outputs, key=_trailing_number)]


class _OnnxRunner:
    ordered = True

    def __init__(self, path):
        import onnxruntime

        self.session = onnxruntime.InferenceSession(
            str(path), onnx_session_options(), providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.input_names = [spec.name for spec in inputs]
        self.input_shapes = {spec.name: _dims(spec.shape) for spec in inputs}
        self.input_dtypes = {spec.name: _ONNX_TYPES[spec.type] for spec in inputs}

    def __call__(self, named):
        return self.session.run(None, named)


def _trailing_number(name):
    digits = name[len(name.rstrip("0123456789")):]
    return (int(digits) if digits else -1, name)
