"""The compiled local relation kernels (`custom_ops/local_relation/`): loader,
support gate, gradient and call.

`make ops` (or the package install) builds `_local_relation_ops.so` next to
this file. `library()` loads it once. `unsupported_reason()` is the one gate
that says whether the kernels of a device run a call: it asks the library's
own table (`local_relation_support.h`, which the C++ and CUDA launchers
check too) through two plain C functions, so it never runs a TensorFlow op
and is safe while a graph is being traced.
"""

import ctypes
import functools
import pathlib

import tensorflow as tf

LIBRARY_PATH = pathlib.Path(__file__).with_name("_local_relation_ops.so")
# TensorFlow device types and the library's names for their kernels.
_KERNEL_DEVICES = {"CPU": "cpu", "GPU": "cuda"}


@functools.lru_cache(maxsize=None)
def library():
    """`(module, reason)`: the loaded op library, or None and why not.

    Example:
    >>> module, reason = library()
    >>> module is not None or reason.startswith("_local_relation_ops.so")
    True
    """
    if not LIBRARY_PATH.exists():
        return None, f"{LIBRARY_PATH.name} is not built (run `make ops`)"
    try:
        module = tf.load_op_library(str(LIBRARY_PATH))
        _c_functions()  # after TensorFlow's loader, which registers the ops
    except (tf.errors.NotFoundError, OSError, AttributeError) as error:
        return None, f"{LIBRARY_PATH.name} did not load ({error}); rebuild it with `make ops`"
    return module, None


@functools.lru_cache(maxsize=None)
def _c_functions():
    """The library's C entry points `(devices, unsupported)` through ctypes."""
    handle = ctypes.CDLL(str(LIBRARY_PATH))
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
    devices, _ = _c_functions()
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
    _, unsupported = _c_functions()
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
