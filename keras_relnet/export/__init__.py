"""Export to SavedModel, TFLite (LiteRT) and ONNX, and running the results."""

from keras_relnet.export.exporter import (
    FORMATS,
    QUANTIZATIONS,
    export,
    input_names,
    input_specs,
    serving_function,
)
from keras_relnet.export.graph_stats import Delegation, onnx_operator_counts, tflite_delegation
from keras_relnet.export.runtimes import (
    artefact_size,
    load_exported,
    onnx_session_options,
    run_exported,
    tflite_custom_operators,
    tflite_operators,
)
