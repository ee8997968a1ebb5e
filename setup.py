"""keras-relnet: relation networks for computer vision in TensorFlow/Keras."""

import pathlib
import subprocess
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithKernels(build_py):
    """Builds the custom local relation kernels (custom_ops/build.py) into the package.

    They need the installed TensorFlow's headers: with pip's build isolation
    (no TensorFlow in the build environment) the step is skipped with a
    message, and `make ops` or `python custom_ops/build.py` builds them later;
    until then `implementation="auto"` falls back to the reference path.
    """

    def run(self):
        script = pathlib.Path(__file__).with_name("custom_ops") / "build.py"
        # An editable install runs where it was built; a wheel may run anywhere.
        portable = [] if getattr(self, "editable_mode", False) else ["--portable"]
        if subprocess.run([sys.executable, str(script), *portable]).returncode:
            print("keras-relnet: the custom kernels were not built (see above); run "
                  "`python custom_ops/build.py` in the installed environment.", file=sys.stderr)
        super().run()

setup(
    name="keras-relnet",
    version="0.1.0",
    description="Relation networks (local relation, global context, object "
    "relation) as Keras 3 layers and models.",
    long_description=pathlib.Path(__file__).with_name("README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_relnet", "keras_relnet.*"]),
    package_data={"keras_relnet.ops.local_relation": ["_local_relation_ops.so"]},
    cmdclass={"build_py": BuildPyWithKernels},
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
