"""The per-user cache of compiled kernels: the build on first use.

When the package carries no library that loads here (another TensorFlow, a
source install under pip's build isolation, a platform without a wheel), the
loader builds one, once, into

    $KERAS_RELNET_KERNEL_CACHE, else $XDG_CACHE_HOME/keras-relnet/kernels,
    else ~/.cache/keras-relnet/kernels

in a directory keyed by the TensorFlow version, the CPU level and a digest
of the kernel sources. A file lock makes concurrent first uses safe: one
process compiles, the others wait and load its library (written by an
atomic rename). A failed build leaves its log and is not retried on every
import; `keras-relnet build-kernels` retries it. `KERAS_RELNET_BUILD_ON_FIRST_USE=0`
turns the build on first use off.
"""

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys

import tensorflow as tf

from keras_relnet.ops.local_relation import builder

FAILED_LOG = "build-failed.log"


def cache_root():
    """The root of the kernel cache (see the module docstring).

    Example:
    >>> cache_root().name
    'kernels'
    """
    override = os.environ.get("KERAS_RELNET_KERNEL_CACHE")
    if override:
        return pathlib.Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "keras-relnet" / "kernels"


def cache_directory(level):
    """Where the library of `level` for this TensorFlow and these sources lives.

    Example:
    >>> cache_directory("baseline").name.startswith(f"tf{tf.__version__}-baseline-")
    True
    """
    return cache_root() / f"tf{tf.__version__}-{level}-{builder.sources_digest()[:12]}"


@contextlib.contextmanager
def _locked(directory):
    """Holds the cache directory's lock (waiting while another process holds it)."""
    import fcntl  # POSIX; the kernels build with g++ and load as .so there only

    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def cached_library(level):
    """The cached library of `level`, or None when it has not been built."""
    directory = cache_directory(level)
    info = builder.read_build_info(directory)
    if info and level in info["libraries"] and (directory / builder.library_name(level)).exists():
        return directory / builder.library_name(level)
    return None


def remove_cached_library(level):
    """Deletes the cached library of `level` (under the lock), so the next build compiles."""
    directory = cache_directory(level)
    if not directory.exists():
        return
    with _locked(directory):
        for name in (builder.library_name(level), builder.BUILD_INFO, FAILED_LOG):
            (directory / name).unlink(missing_ok=True)


def missing_prerequisite():
    """Why a kernel cannot be compiled here (no compiler, no TensorFlow
    headers), or None when it can."""
    compiler = builder.cxx_compiler()
    if shutil.which(compiler) is None:
        return f"the C++ compiler {compiler!r} was not found (install g++ or set CXX)"
    headers = pathlib.Path(tf.sysconfig.get_include()) / "tensorflow" / "core" / "framework"
    if not (headers / "op_kernel.h").exists():
        return f"TensorFlow's C++ headers are missing ({headers})"
    return None


def build_on_first_use_enabled():
    return os.environ.get("KERAS_RELNET_BUILD_ON_FIRST_USE", "1") != "0"


def build_into_cache(level, retry_failed=False, announce=True):
    """Builds the library of `level` into the cache unless it is there.

    Args:
        level: a CPU level (`builder.supported_levels()`, or "native").
        retry_failed: build even if an earlier build failed (else its failure
            is returned without compiling again).
        announce: print one line to stderr while compiling.

    Returns:
        `(path, None)`, or `(None, why)` when there is no library.
    """
    directory = cache_directory(level)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):  # waits while another process compiles
        cached = cached_library(level)
        if cached is not None:
            return cached, None
        failed = directory / FAILED_LOG
        if failed.exists() and not retry_failed:
            return None, (f"an earlier build failed (log: {failed}); fix it and run "
                          "`keras-relnet build-kernels`")
        problem = missing_prerequisite()
        if problem:
            return None, f"it cannot be compiled here: {problem}"
        if announce:
            print(f"keras-relnet: compiling the local relation kernels ({level}, TensorFlow "
                  f"{tf.__version__}) into {directory}; once, a few minutes", file=sys.stderr,
                  flush=True)
        log = directory / "build.log"
        with open(log, "w") as output:
            result = subprocess.run(
                [sys.executable, builder.__file__, "--levels", level, "--output",
                 str(directory)], stdout=output, stderr=subprocess.STDOUT)
        if result.returncode:
            os.replace(log, failed)
            return None, f"compiling it failed (log: {failed})"
        failed.unlink(missing_ok=True)
        return cached_library(level), None
