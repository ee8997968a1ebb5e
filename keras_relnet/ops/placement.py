"""Where ops created now will run: their device type, and whether XLA compiles them.

The local relation dispatch decides by these, not by whether the machine has
a GPU: a call inside `with tf.device("/cpu:0")`, or in a `MirroredStrategy`
replica on CPU devices, runs on the CPU of a GPU machine too. Nothing here
runs a TensorFlow op, so it is safe while a graph is being traced.
"""

import tensorflow as tf


def visible_gpus():
    """The GPUs TensorFlow may place ops on.

    Returns:
        `tf.config.get_visible_devices("GPU")` (which, unlike listing logical
        devices, does not initialise the runtime, so a
        `MultiWorkerMirroredStrategy` can still be created afterwards).
    """
    return tf.config.get_visible_devices("GPU")


class _PendingOp:
    """What a device function reads of an op being created: its device."""

    device = ""


def requested_device():
    """The device that the enclosing `tf.device` scopes give ops created now.

    Returns:
        A device string such as "/device:GPU:1", or "" when no scope names
        one.

    Example:
    >>> with tf.device("/cpu:0"):
    ...     requested_device().endswith("CPU:0")
    True
    """
    if not tf.executing_eagerly():
        # The graph's device stack, applied innermost first as TensorFlow
        # applies it to a new op. (Only the context's device name is public,
        # and TF1-style graphs do not set it.)
        try:
            stack = tf.compat.v1.get_default_graph()._device_function_stack.peek_objs()
            pending = _PendingOp()
            for spec in stack:
                if spec.is_null_merge:
                    continue
                if spec.function is None:  # tf.device(None): clears the outer scopes
                    break
                pending.device = spec.string_merge(pending)
            if pending.device:
                return pending.device
        except (AttributeError, TypeError):  # a device function that needs a real op
            pass
    from tensorflow.python.eager import context

    return context.context().device_name or ""


def device_type():
    """The device type ("CPU", "GPU", "TPU", ...) that ops created now run on.

    An op without a device scope goes to a GPU when one is visible (for ops
    with GPU kernels); a GPU scope on a machine without GPUs falls back to
    the CPU (soft placement).

    Example:
    >>> with tf.device("/cpu:0"):
    ...     device_type()
    'CPU'
    """
    requested = requested_device()
    kind = tf.DeviceSpec.from_string(requested).device_type if requested else None
    has_gpu = bool(visible_gpus())
    if kind is None:
        return "GPU" if has_gpu else "CPU"
    kind = kind.upper()
    if kind == "GPU" and not has_gpu:
        return "CPU"
    return kind


def in_xla_context():
    """Whether ops created now will be compiled by XLA: inside
    `tf.function(jit_compile=True)`, `model.compile(jit_compile=True)` or a
    TPU replicated computation, or a function called from one.

    Example:
    >>> in_xla_context()
    False
    """
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # the helper moved: assume no XLA context
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())
