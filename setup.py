"""keras-relnet: relation networks for computer vision in TensorFlow/Keras."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="keras-relnet",
    version="0.1.0",
    description="Relation networks (local relation, global context, object "
    "relation) as Keras 3 layers and models.",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_relnet", "keras_relnet.*"]),
    python_requires=">=3.10",
    install_requires=["tensorflow~=2.20.0", "keras>=3.10,<4", "numpy"],
    extras_require={
        "garden": ["tf-keras~=2.20.0", "tf-models-official==2.20.0"],
        "export": ["tf2onnx>=1.17", "onnxruntime", "ai-edge-litert"],
        "demo": ["scikit-learn", "pycocotools"],
        "visualize": ["matplotlib"],
        "test": ["pytest", "hypothesis", "scikit-learn", "scikit-image", "pycocotools"],
    },
    entry_points={"console_scripts": ["keras-relnet = keras_relnet.cli:main"]},
    license="Apache-2.0",
)
