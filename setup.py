"""keras-relnet: relation networks for computer vision in TensorFlow/Keras."""

import pathlib
import subprocess
import sys

from setuptools import Distribution, find_packages, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
BUILDER = ROOT / "keras_relnet" / "ops" / "local_relation" / "builder.py"


class BuildPyWithKernels(build_py):
    """Builds the compiled local relation kernels into the package.

    A wheel gets every portable CPU level of its architecture (the loader
    picks one at run time); an editable install gets this CPU's level. The
    build needs the installed TensorFlow's headers: under pip's build
    isolation (no TensorFlow in the build environment) it is skipped with a
    message, and the package builds its kernel on first use instead.
    """

    def run(self):
        super().run()
        editable = getattr(self, "editable_mode", False)
        output = BUILDER.parent if editable else (
            pathlib.Path(self.build_lib) / "keras_relnet" / "ops" / "local_relation")
        levels = "this" if editable else "all"
        command = [sys.executable, str(BUILDER), "--levels", levels, "--output", str(output)]
        if subprocess.run(command).returncode:
            print("keras-relnet: the compiled kernels were not built (see above); the package "
                  "builds them on first use, or run `keras-relnet build-kernels`.",
                  file=sys.stderr)


class DistributionWithKernels(Distribution):
    """The package holds native code (the kernels), so it installs to platlib."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """A wheel for one platform and any Python 3: the kernels are native code
    that links TensorFlow's framework library, not the Python C API."""

    def get_tag(self):
        _, _, platform_tag = super().get_tag()
        return "py3", "none", platform_tag


setup(
    name="keras-relnet",
    version="0.1.0",
    description="Relation networks (local relation, global context, object "
    "relation) as Keras 3 layers and models.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_relnet", "keras_relnet.*"]),
    # The kernel sources travel with the package: the build on first use compiles them.
    package_data={"keras_relnet.ops.local_relation": [
        "csrc/*.h", "csrc/*.cc", "csrc/*.cu", "csrc/build_flags.bzl"]},
    cmdclass={"build_py": BuildPyWithKernels, "bdist_wheel": PlatformWheel},
    distclass=DistributionWithKernels,
    python_requires=">=3.10",
    install_requires=["tensorflow~=2.20.0", "keras>=3.10,<4", "numpy"],
    extras_require={
        "garden": ["tf-keras~=2.20.0", "tf-models-official==2.20.0"],
        "export": ["tf2onnx>=1.17", "onnxruntime", "ai-edge-litert"],
        "demo": ["scikit-learn", "pycocotools"],
        "visualize": ["matplotlib"],
        "tracking": ["scipy", "pandas", "motmetrics>=1.4"],
        "test": ["pytest", "hypothesis", "scikit-learn", "scikit-image", "pycocotools",
                 "motmetrics>=1.4"],
    },
    entry_points={"console_scripts": ["keras-relnet = keras_relnet.cli:main"]},
    license="Apache-2.0",
)
