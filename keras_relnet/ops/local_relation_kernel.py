"""The compiled local relation kernels (`custom_ops/local_relation/`): loader,
gradient and call.

`make ops` (or the package install) builds `_local_relation_ops.so` next to
this file. `library()` loads it once; `kernel_status()` says whether it
loaded, for which devices, or why not. `local_relation` in
`keras_relnet.ops.local_relation` dispatches here for
`implementation="custom"` (and for "auto" when the kernel supports the call).
"""

import functools
import pathlib

import tensorflow as tf

LIBRARY_PATH = pathlib.Path(__file__).with_name("_local_relation_ops.so")
DTYPES = (tf.float32, tf.float16, tf.bfloat16)
# Channel sharing the CUDA kernels handle (a group's channels within one warp).
CUDA_GROUP_SIZES = (1, 2, 4, 8, 16, 32)


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
        return tf.load_op_library(str(LIBRARY_PATH)), None
    except (tf.errors.NotFoundError, OSError) as error:
        return None, f"{LIBRARY_PATH.name} did not load: {error}"


@functools.lru_cache(maxsize=None)
def built_devices():
    """The device types the library has kernels for: `{"cpu"}` or `{"cpu", "cuda"}`
    (empty when it is not loaded)."""
    module, _ = library()
    if module is None:
        return frozenset()
    with tf.device("/cpu:0"):
        return frozenset(module.keras_relnet_local_relation_build_info().numpy()
                         .decode().split(","))


def unsupported_reason(dtype, group_size=None, on_gpu=False):
    """Why the compiled kernel cannot run a call, or None when it can.

    Args:
        dtype: the dtype of the values.
        group_size: channels per group, m (the CUDA kernels need m | 32).
        on_gpu: whether the call runs on a GPU.

    Returns:
        A phrase, or None.
    """
    module, reason = library()
    if module is None:
        return reason
    if tf.as_dtype(dtype) not in DTYPES:
        return f"the kernel supports float32/float16/bfloat16, not {tf.as_dtype(dtype).name}"
    if on_gpu:
        if "cuda" not in built_devices():
            return "the library was built without CUDA (no nvcc at build time)"
        if group_size is not None and group_size not in CUDA_GROUP_SIZES:
            return f"the CUDA kernels need channels_per_group dividing 32, not {group_size}"
    return None


def fused_local_relation(query, key, value, prior, strides, dilation_rate, composability,
                         scale):
    """`local_relation` through the compiled kernel (differentiable).

    Query and key are cast to the value dtype, the prior to float32; the
    arguments have been validated by `local_relation`.

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
