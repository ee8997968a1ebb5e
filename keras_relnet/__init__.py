"""keras-relnet: relation networks for computer vision in TensorFlow/Keras.

Subpackages: `ops` (tensor-level math), `layers` (Keras 3 layers),
`applications` (models), `utils` (FLOPs counter); imported on use: `export`
(SavedModel, TFLite, ONNX), `data` (ImageNet input pipelines), `training`
(the ImageNet recipe, resume, strategies), `garden` (TF Model Garden
backbones and experiments), `visualize` (figures).
"""

import keras as _keras

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        "keras-relnet runs on the TensorFlow backend of Keras 3; the active "
        f"backend is {_keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow."
    )

from keras_relnet import applications, layers, ops, utils  # noqa: E402

# Registered with Keras on import, so `keras.models.load_model` finds them
# after `import keras_relnet`: the training recipe's optimizer and the
# similarity network's loss.
import keras_relnet.tracking.similarity_network  # noqa: E402, F401
import keras_relnet.training.sgd  # noqa: E402, F401

__version__ = "0.1.0"
