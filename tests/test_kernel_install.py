"""The kernel as users install it: a wheel with portable CPU levels, installed
away from the checkout; the build on first use into a per-user cache, safe
for two processes at once; and a clear warning when neither is possible.

Each check runs in a fresh Python (this one has the checkout's library
loaded, which registers the same ops) that imports the installed package
from its own directory. CUDA is left out of these builds (KERAS_RELNET_CUDA=0)
to keep them short: `make install` and test_local_relation_kernel.py build and
check the CUDA part.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import tensorflow as tf

from keras_relnet.ops.local_relation import builder

pytestmark = pytest.mark.packaging  # minutes: `make test-packaging`, which CI runs

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = pathlib.PurePosixPath("keras_relnet/ops/local_relation")
LEVELS = builder.portable_levels()
COMPILED = ("_local_relation_ops.*.so", "_local_relation_ops.json")

# Prints one JSON line: what explain() says, which library ran, and the largest
# difference between the kernel ("custom") and the reference on random inputs.
FORWARD = r"""
import json, warnings
import numpy as np
import keras_relnet
from keras_relnet.ops.local_relation import explain, kernel, local_relation_aggregation

rng = np.random.default_rng(0)
inputs = [rng.normal(size=shape).astype("float32") for shape in
          ((2, 5, 6, 2), (2, 9, 11, 2), (2, 9, 11, 8), (2, 3, 3))]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    reference = local_relation_aggregation(*inputs, strides=2, implementation="reference")
    for _ in range(2):  # a missing kernel is one warning, not one per call
        auto = local_relation_aggregation(*inputs, strides=2, implementation="auto")
try:
    custom = local_relation_aggregation(*inputs, strides=2, implementation="custom")
    error, custom_error = float(np.abs(custom - reference).max()), None
except ValueError as failure:
    error, custom_error = None, str(failure)
loaded = kernel.loaded_library()
print(json.dumps({
    "package": keras_relnet.__file__,
    "explain": explain("auto"),
    "library": str(loaded.path) if loaded else None,
    "level": loaded.level if loaded else None,
    "origin": loaded.origin if loaded else None,
    "error": error,
    "custom_error": custom_error,
    "auto_error": float(np.abs(auto - reference).max()),
    "warnings": [str(w.message) for w in caught if "kernel is unavailable" in str(w.message)],
}))
"""


def run_installed(site, script, cache, *, wait=True, **environment):
    """Runs `script` in a fresh Python that imports the package from `site`."""
    env = {**os.environ, "PYTHONPATH": str(site), "KERAS_RELNET_KERNEL_CACHE": str(cache),
           "KERAS_RELNET_CUDA": "0", "TF_CPP_MIN_LOG_LEVEL": "3", **environment}
    env.pop("KERAS_RELNET_KERNEL_LIBRARY", None)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=site.parent, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return finish(process) if wait else process


def finish(process):
    """`(report, stderr)` of a `run_installed` process; fails on a nonzero exit."""
    stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    lines = stdout.strip().splitlines()
    return (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else stdout), stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip wheel --no-build-isolation` builds from a copy of the sources."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "bazel-*", "__pycache__", "*.egg-info",
        ".pytest_cache", ".hypothesis", *COMPILED))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(work / "dist"), str(source)], check=True,
                   capture_output=True, env={**os.environ, "KERAS_RELNET_CUDA": "0"},
                   timeout=1500)
    (path,) = (work / "dist").glob("*.whl")
    return path


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory):
    """The wheel installed with `pip install --no-deps --target` (it reuses this TensorFlow)."""
    target = tmp_path_factory.mktemp("installed") / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    return target


def without_kernels(site, destination):
    """A copy of the installed package with no compiled library: what a source
    install under pip's build isolation leaves."""
    shutil.copytree(site / "keras_relnet", destination / "keras_relnet")
    for pattern in COMPILED:
        for path in (destination / PACKAGE).glob(pattern):
            path.unlink()
    return destination


def test_the_wheel_carries_every_portable_level_and_records_its_tensorflow(wheel):
    assert re.fullmatch(r"keras_relnet-[\d.]+-py3-none-(linux|macosx)_\w+\.whl", wheel.name)
    names = set(zipfile.ZipFile(wheel).namelist())
    for level in LEVELS:
        assert f"{PACKAGE}/{builder.library_name(level)}" in names
    assert f"{PACKAGE}/csrc/local_relation_ops.cc" in names  # for the build on first use
    info = json.loads(zipfile.ZipFile(wheel).read(f"{PACKAGE}/{builder.BUILD_INFO}"))
    assert info["tensorflow"] == tf.__version__
    assert info["cxx11_abi"] == tf.sysconfig.CXX11_ABI_FLAG
    assert set(info["libraries"]) == set(LEVELS) and "native_cpu_features" not in info
    for level, entry in info["libraries"].items():
        assert entry["flags"] == builder.build_flags()["CXX_FLAGS"] + builder.level_flags(level)
        assert not any("native" in flag for flag in entry["flags"])


@pytest.mark.skipif(shutil.which("objdump") is None or builder.portable_levels() == ["baseline"],
                    reason="needs objdump and x86-64")
def test_each_level_uses_no_instruction_above_it(site):
    # AVX registers in the baseline, AVX-512 registers below v4, would stop
    # the library with an illegal instruction on a CPU of that level.
    forbidden = {"baseline": r"%[yz]mm", "x86-64-v3": r"%zmm"}
    for level, pattern in forbidden.items():
        library = site / PACKAGE / builder.library_name(level)
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)],
                              check=True, capture_output=True, text=True).stdout
        assert not re.search(pattern, text), f"{level} uses {pattern}"
    text = subprocess.run(["objdump", "-d", str(site / PACKAGE / builder.library_name(
        "x86-64-v4"))], check=True, capture_output=True, text=True).stdout
    assert "%zmm" in text  # the kernel's 16-lane vectors are one register there


@pytest.mark.parametrize("level", builder.supported_levels())
def test_the_installed_wheel_runs_each_level_this_cpu_supports(site, level, tmp_path):
    report, _ = run_installed(site, FORWARD, tmp_path / "cache", KERAS_RELNET_CPU_LEVEL=level,
                              KERAS_RELNET_BUILD_ON_FIRST_USE="0")
    assert report["package"].startswith(str(site))
    assert report["library"] == str(site / PACKAGE / builder.library_name(level))
    assert report["origin"] == "package" and report["level"] == level
    assert report["explain"].startswith("custom (auto on CPU: the compiled kernel supports")
    assert f"CPU level {level}, from the package, built for TensorFlow {tf.__version__}" \
        in report["explain"]
    assert report["error"] <= 1e-5 and report["auto_error"] <= 1e-5
    assert report["warnings"] == [] and not (tmp_path / "cache").exists()


def test_a_kernel_built_for_another_tensorflow_is_a_clear_error(site, tmp_path):
    other = without_kernels(site, tmp_path / "other")
    shutil.copytree(site / PACKAGE, other / PACKAGE, dirs_exist_ok=True)
    record = other / PACKAGE / builder.BUILD_INFO
    info = json.loads(record.read_text())
    record.write_text(json.dumps({**info, "tensorflow": "2.13.0"}))
    report, _ = run_installed(other, FORWARD, tmp_path / "cache",
                              KERAS_RELNET_BUILD_ON_FIRST_USE="0")
    expected = (f"it was built for TensorFlow 2.13.0 (C++ ABI {info['cxx11_abi']}), and "
                f"TensorFlow {tf.__version__}")
    assert expected in report["custom_error"] and "implementation='custom'" in report["custom_error"]
    assert report["library"] is None and len(report["warnings"]) == 1
    assert expected in report["warnings"][0] and report["auto_error"] == 0


def test_two_first_uses_at_once_build_one_library(site, tmp_path):
    """A package without kernels: `keras-relnet build-kernels` and a forward
    start together on an empty cache; one compiles, the other waits for it."""
    bare = without_kernels(site, tmp_path / "bare")
    cache = tmp_path / "cache"
    command = run_installed(bare, "from keras_relnet.cli import main; import sys; "
                            "sys.exit(main(['build-kernels']))", cache, wait=False)
    forward = run_installed(bare, FORWARD, cache, wait=False)
    (printed, command_stderr), (report, forward_stderr) = finish(command), finish(forward)
    announcements = (command_stderr + forward_stderr).count("compiling the local relation")
    assert announcements == 1, command_stderr + forward_stderr
    (library,) = cache.glob("*/_local_relation_ops.*.so")
    level = builder.supported_levels()[0]
    assert library.name == builder.library_name(level)
    assert library.parent.name.startswith(f"tf{tf.__version__}-{level}-")
    assert report["library"] == str(library) and report["origin"] == "cache"
    assert report["error"] <= 1e-5 and report["warnings"] == []
    assert f"{library} (CPU level {level}, from the cache" in report["explain"]
    assert str(library) in printed and "custom (auto on CPU" in printed
    # Later processes load it without compiling.
    _, stderr = run_installed(bare, FORWARD, cache)
    assert "compiling" not in stderr


def test_without_a_compiler_auto_warns_once_and_runs_the_reference(site, tmp_path):
    bare = without_kernels(site, tmp_path / "bare")
    report, stderr = run_installed(bare, FORWARD, tmp_path / "cache", CXX="/nonexistent/g++")
    (warning,) = report["warnings"]
    assert "the package carries no compiled kernel" in warning
    assert "the C++ compiler '/nonexistent/g++' was not found" in warning
    assert report["auto_error"] == 0 and report["library"] is None
    assert "C++ compiler" in report["custom_error"] and "compiling" not in stderr
    assert report["explain"].startswith("reference (auto on CPU:")


def test_a_failed_build_keeps_its_log_and_is_not_retried_on_every_import(site, tmp_path):
    bare = without_kernels(site, tmp_path / "bare")
    cache = tmp_path / "cache"
    failing = shutil.which("false")
    report, stderr = run_installed(bare, FORWARD, cache, CXX=failing)
    assert stderr.count("compiling the local relation") == 1
    (log,) = cache.glob("*/build-failed.log")
    assert "compiling it failed (log: " in report["warnings"][0] and str(log) in report["warnings"][0]
    report, stderr = run_installed(bare, FORWARD, cache, CXX=failing)
    assert "compiling" not in stderr and "an earlier build failed" in report["warnings"][0]
    assert "keras-relnet build-kernels" in report["warnings"][0]
