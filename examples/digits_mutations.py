"""Broken exports that the digits demo's checks must fail.

Each mutation makes a wrong artefact the way a real bug would: an int8
export calibrated on the wrong data, a quantization scale written wrong, a
float weight corrupted. `train_digits.py` runs them after its own checks and
fails if any one of them passes (`--skip-mutations` turns them off).
"""

import pathlib

import numpy as np


def calibrated_on_zeros(model, directory, x_train):
    """The int8 artefact exported with all-zero representative data."""
    from keras_relnet.export import export

    return export(model, pathlib.Path(directory) / "mutant_zero_calibration_int8.tflite",
                  format="tflite", quantization="int8", overwrite=True,
                  representative_data=np.zeros_like(x_train[:200]))


def _edit_tflite(source, target, edit):
    """Copies the TFLite model `source` to `target` with `edit(model)` applied
    to its object form (tensors, buffers, quantization parameters)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    edit(model)
    flatbuffer_utils.write_model(model, str(target))
    return pathlib.Path(target)


def _operator_name(model, operator):
    from tensorflow.lite.python import schema_py_generated as schema

    code = model.operatorCodes[operator.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    return {value: name for name, value in vars(schema.BuiltinOperator).items()
            if not name.startswith("_")}[builtin]


def scale_doubled(int8_path, directory):
    """The int8 artefact with the weight scale of its first convolution doubled
    (every dequantized filter weight of that layer twice its value)."""
    def double_first_filter_scale(model):
        graph = model.subgraphs[0]
        conv = next(op for op in graph.operators if _operator_name(model, op) == "CONV_2D")
        quantization = graph.tensors[conv.inputs[1]].quantization
        quantization.scale = np.asarray(quantization.scale, "float32") * 2

    return _edit_tflite(int8_path, pathlib.Path(directory) / "mutant_scale_doubled_int8.tflite",
                        double_first_filter_scale)


def weight_perturbed(float_path, directory):
    """The float32 artefact with one weight changed: the largest-magnitude
    filter weight of its first convolution, scaled by 1.05."""
    def perturb_one_weight(model):
        graph = model.subgraphs[0]
        conv = next(op for op in graph.operators if _operator_name(model, op) == "CONV_2D")
        buffer = model.buffers[graph.tensors[conv.inputs[1]].buffer]
        weights = np.frombuffer(np.asarray(buffer.data, "uint8").tobytes(), "float32").copy()
        index = np.abs(weights).argmax()
        weights[index] *= 1.05
        buffer.data = np.frombuffer(weights.tobytes(), "uint8")

    return _edit_tflite(float_path, pathlib.Path(directory) / "mutant_weight_perturbed.tflite",
                        perturb_one_weight)
