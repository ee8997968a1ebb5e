"""Export to SavedModel, TFLite (LiteRT) and ONNX, and running the results."""

from keras_relnet.export.exporter import (
    FORMATS,
    QUANTIZATIONS,
    export,
    input_names,
    input_specs,
    serving_function,
)
from keras_relnet.export.runtimes import (
    artefact_size,
    load_exported,
    run_exported,
    tflite_custom_operators,
    tflite_operators,
)
