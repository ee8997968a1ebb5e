"""The compiled local relation kernels (`csrc/`): loader, support gate,
gradient and call.

`library()` loads one op library once, the first that loads of:

1. `KERAS_RELNET_KERNEL_LIBRARY`, when set (that file and nothing else);
2. the package's own, built by the install or the wheel
   (`_local_relation_ops.<level>.so` beside this file, described by
   `_local_relation_ops.json`): the best CPU level this machine runs, if it
   was built for this TensorFlow (same major.minor and C++ ABI);
3. the per-user cache (`kernel_cache`), built there on first use when a
   compiler and TensorFlow's headers are present.

`unsupported_reason()` is the one gate that says whether the kernels of a
device run a call: it asks the library's own table (`local_relation_support.h`,
which the C++ and CUDA launchers check too) through two plain C functions,
so it never runs a TensorFlow op and is safe while a graph is being traced.
"""

import ctypes
import dataclasses
import functools
import os
import pathlib
import threading

import tensorflow as tf

from keras_relnet.ops.local_relation import builder, kernel_cache

# TensorFlow device types and the library's names for their kernels.
_KERNEL_DEVICES = {"CPU": "cpu", "GPU": "cuda"}
_LOADING = threading.Lock()


@dataclasses.dataclass(frozen=True)
class LoadedLibrary:
    """The op library in use: its file, CPU level, where it came from
    ("package", "cache" or "KERAS_RELNET_KERNEL_LIBRARY") and the TensorFlow
    version it was built for."""
    path: pathlib.Path
    level: str
    origin: str
    tensorflow: str


def tensorflow_mismatch(info):
    """Why libraries built as `info` (a build record) cannot load into this
    TensorFlow, or None when they can.

    Example:
    >>> tensorflow_mismatch({"tensorflow": "2.0.0", "cxx11_abi": 1}) is None
    False
    """
    installed = tf.__version__
    if (info["tensorflow"].split(".")[:2] != installed.split(".")[:2]
            or info.get("cxx11_abi") != tf.sysconfig.CXX11_ABI_FLAG):
        return (f"it was built for TensorFlow {info['tensorflow']} "
                f"(C++ ABI {info.get('cxx11_abi')}), and TensorFlow {installed} "
                f"(C++ ABI {tf.sysconfig.CXX11_ABI_FLAG}) is installed")
    return None


def _native_runs_here(info):
    """Whether a "native" library of `info` was built on a CPU with no feature this one lacks."""
    return set(info.get("native_cpu_features", ["?"])) <= builder.cpu_features()


def _cached_choice():
    """The cached library to load without compiling: a "native" one built
    for this CPU (`keras-relnet build-kernels --level native`), else the best
    portable level's; None when neither is cached."""
    native = kernel_cache.cached_library(builder.NATIVE)
    if native is not None and _native_runs_here(builder.read_build_info(native.parent)):
        return native, builder.NATIVE
    level = builder.supported_levels()[0]
    return kernel_cache.cached_library(level), level


def _packaged_choice():
    """`(LoadedLibrary, None)` for the package's best library for this CPU,
    or `(None, why)`."""
    info = builder.read_build_info(builder.PACKAGE_DIR)
    if not info or not info.get("libraries"):
        return None, "the package carries no compiled kernel"
    levels = builder.supported_levels()
    if _native_runs_here(info):
        levels.insert(0, builder.NATIVE)
    level = next((level for level in levels if level in info["libraries"]), None)
    if level is None:
        return None, (f"the package's kernels ({', '.join(info['libraries'])}) need "
                      f"a CPU level this machine lacks (it runs {', '.join(levels)})")
    mismatch = tensorflow_mismatch(info)
    if mismatch:
        return None, f"the package's kernel cannot load: {mismatch}"
    path = builder.PACKAGE_DIR / info["libraries"][level]["file"]
    return LoadedLibrary(path, level, "package", info["tensorflow"]), None


def _load(path):
    """The op module of `path`, or raises (TensorFlow's loader, then ctypes)."""
    module = tf.load_op_library(str(path))
    _c_functions(str(path))  # after TensorFlow's loader, which registers the ops
    return module


_LOAD_ERRORS = (tf.errors.NotFoundError, OSError, AttributeError)


def _locate_and_load():
    """`(module, LoadedLibrary | None, reason | None)`: see the module docstring."""
    override = os.environ.get("KERAS_RELNET_KERNEL_LIBRARY")
    if override:
        try:
            return _load(override), LoadedLibrary(
                pathlib.Path(override), "given", "KERAS_RELNET_KERNEL_LIBRARY", "?"), None
        except _LOAD_ERRORS as error:
            return None, None, f"KERAS_RELNET_KERNEL_LIBRARY={override} did not load ({error})"
    packaged, problem = _packaged_choice()
    if packaged is not None:
        try:
            return _load(packaged.path), packaged, None
        except _LOAD_ERRORS as error:
            problem = f"the package's {packaged.path.name} did not load ({error})"
    cached, level = _cached_choice()
    if cached is None:
        if not kernel_cache.build_on_first_use_enabled():
            return None, None, (f"{problem}, and building on first use is off "
                                "(KERAS_RELNET_BUILD_ON_FIRST_USE=0; run "
                                "`keras-relnet build-kernels`)")
        cached, not_built = kernel_cache.build_into_cache(level)
        if cached is None:
            return None, None, f"{problem}, and the {level} kernel was not built: {not_built}"
    try:
        return _load(cached), LoadedLibrary(cached, level, "cache", tf.__version__), None
    except _LOAD_ERRORS as error:
        return None, None, f"{problem}, and the cached {cached} did not load ({error})"


def _located():
    with _LOADING:  # one thread locates (and maybe compiles); the others wait for it
        return _located_once()


@functools.lru_cache(maxsize=None)
def _located_once():
    return _locate_and_load()


def library():
    """`(module, reason)`: the loaded op library, or None and why not.

    Example:
    >>> module, reason = library()
    >>> module is not None or "kernel" in reason
    True
    """
    module, _, reason = _located()
    return module, reason


def loaded_library():
    """The `LoadedLibrary` in use, or None when no library loaded.

    Example:
    >>> loaded = loaded_library()
    >>> loaded is None or loaded.path.exists()
    True
    """
    return _located()[1]


@functools.lru_cache(maxsize=None)
def _c_functions(path):
    """The C entry points `(devices, unsupported)` of the library at `path`, through ctypes."""
    handle = ctypes.CDLL(path)
    devices = handle.KerasRelnetLocalRelationDevices
    devices.argtypes, devices.restype = [], ctypes.c_char_p
    unsupported = handle.KerasRelnetLocalRelationUnsupported
    unsupported.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    unsupported.restype = ctypes.c_char_p
    return devices, unsupported


def built_devices():
    """The kernels' devices: `{"cpu"}` or `{"cpu", "cuda"}` (empty when the
    library is not loaded).

    Example:
    >>> "cpu" in built_devices() or library()[0] is None
    True
    """
    if library()[0] is None:
        return frozenset()
    devices, _ = _c_functions(str(loaded_library().path))
    return frozenset(devices().decode().split(","))


def unsupported_reason(device_type, dtype, kernel_size=None, channels_per_group=None):
    """Why the compiled kernels of a device cannot run a call, or None when they can.

    Args:
        device_type: the TensorFlow device type the op will be placed on
            ("CPU", "GPU", ...).
        dtype: the dtype of the values.
        kernel_size: the window size k, when known.
        channels_per_group: m, when known.

    Returns:
        A phrase naming the limit and what was received, or None. Limits of
        an argument that is not given are not checked.

    Example:
    >>> unsupported_reason("CPU", "float64") is None
    False
    >>> unsupported_reason("CPU", "float32", 7, 8) in (None, library()[1])
    True
    """
    module, reason = library()
    if module is None:
        return reason
    if device_type not in _KERNEL_DEVICES:
        return f"the compiled kernels run on CPU and GPU, not {device_type}"
    dtype = tf.as_dtype(dtype).name
    _, unsupported = _c_functions(str(loaded_library().path))
    reason = unsupported(_KERNEL_DEVICES[device_type].encode(), dtype.encode(),
                         1 if kernel_size is None else int(kernel_size),
                         1 if channels_per_group is None else int(channels_per_group))
    if reason is None:
        return None
    received = {"dtype": dtype, "kernel_size": kernel_size,
                "channels_per_group": channels_per_group}
    details = ", ".join(f"{name} {value}" for name, value in received.items()
                        if value is not None)
    return f"{reason.decode()}; received {details}"


def fused_local_relation(query, key, value, prior, strides, dilation_rate, composability,
                         scale):
    """`local_relation` through the compiled kernel (differentiable).

    Query and key are cast to the value dtype, the prior to float32; the
    arguments have been validated by `local_relation` and the call by
    `unsupported_reason`.

    Returns:
        `[B, Ho, Wo, C]` in the value dtype.
    """
    module, reason = library()
    if module is None:
        raise ValueError(f"implementation='custom' needs the compiled kernel: {reason}.")
    output, _ = module.keras_relnet_local_relation(
        tf.cast(query, value.dtype), tf.cast(key, value.dtype), value,
        tf.cast(prior, tf.float32), strides=strides, dilation_rate=dilation_rate,
        composability=composability, scale=float(scale))
    return output


@tf.RegisterGradient("KerasRelnetLocalRelation")
def _local_relation_gradient(op, d_output, _d_log_sum_exp):
    """Gradients from the fused gradient op (the log-sum-exp output is not
    differentiable: callers never use it)."""
    module, _ = library()
    attributes = {name: op.get_attr(name)
                  for name in ("strides", "dilation_rate", "composability", "scale")}
    attributes["composability"] = attributes["composability"].decode()
    return module.keras_relnet_local_relation_grad(
        *op.inputs, op.outputs[0], op.outputs[1], d_output, **attributes)
