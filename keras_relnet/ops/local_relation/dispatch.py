"""Which local relation implementation runs a call, and why.

The policy of `implementation="auto"`, by where the op runs (decided by its
placement, `ops.placement`, not by whether the machine has a GPU):

| where | "auto" runs |
|---|---|
| inside XLA (`jit_compile=True`, a TPU) | "reference", which XLA compiles ("custom" raises) |
| CPU | "custom" (the compiled kernel) when it is built and supports the call, else "reference" |
| GPU | "xla" until the CUDA kernels have passed the standalone harness on GPU hardware (`CUDA_KERNELS_VERIFIED`); then "custom" where they support the call |
| any other device | "xla" |

"reference" and "xla" never touch the kernel library; "custom" runs the
kernel or raises a `ValueError` saying why it cannot.
"""

import functools
import warnings

import tensorflow as tf

from keras_relnet.ops import checks, placement
from keras_relnet.ops.local_relation import kernel

IMPLEMENTATIONS = ("reference", "xla", "custom", "auto")

# The record of a passing `make cuda-harness` run on GPU hardware (device,
# date, commit), with the kernels measured faster than XLA there: what lets
# "auto" run the CUDA kernels. None until then: no session of this project
# has had a GPU to run it on, so on GPUs "auto" runs "xla".
CUDA_KERNELS_VERIFIED = None

_XLA_REASON = ("inside an XLA-compiled function (jit_compile=True or a TPU), where a custom "
               "op cannot run")


def auto_runs_cuda_kernels():
    """Whether "auto" runs the CUDA kernels on GPUs (see `CUDA_KERNELS_VERIFIED`).

    Example:
    >>> auto_runs_cuda_kernels()
    False
    """
    return CUDA_KERNELS_VERIFIED is not None


def supports_jit(implementation):
    """Whether a layer with this implementation may be compiled by XLA.

    False for "custom" (a custom op cannot be compiled), and for "auto" once
    it runs the CUDA kernels on a visible GPU, so that Keras'
    `jit_compile="auto"` keeps the train step uncompiled and the kernels run.

    Args:
        implementation: one of `IMPLEMENTATIONS`.

    Returns:
        A bool, the value of the layer's `supports_jit`.

    Example:
    >>> supports_jit("custom"), supports_jit("reference")
    (False, True)
    """
    checks.check_choice("implementation", implementation, IMPLEMENTATIONS)
    if implementation == "custom":
        return False
    if implementation == "auto":
        return not (auto_runs_cuda_kernels() and placement.visible_gpus())
    return True


def resolve_implementation(implementation, dtype=tf.float32, channels_per_group=None,
                           kernel_size=None):
    """Chooses the implementation that runs a call created now, and says why.

    The device is where the op will be placed (the enclosing `tf.device`
    scopes, a distribution strategy's replica device, else a visible GPU,
    else the CPU); see the module docstring for the policy.

    Args:
        implementation: "reference", "xla", "custom" or "auto".
        dtype: dtype of the values.
        channels_per_group: m, when known.
        kernel_size: the window size k, when known.

    Returns:
        `(name, reason)`: the implementation that runs and a phrase why.

    Raises:
        ValueError: for "custom" where the compiled kernel cannot run the
            call (not built, inside XLA, or unsupported on the device).

    Example:
    >>> resolve_implementation("reference")
    ('reference', 'requested explicitly')
    """
    checks.check_choice("implementation", implementation, IMPLEMENTATIONS)
    if implementation in ("reference", "xla"):
        return implementation, "requested explicitly"
    device = placement.device_type()
    if implementation == "custom":
        reason = _XLA_REASON if placement.in_xla_context() else (
            kernel.unsupported_reason(device, dtype, kernel_size,
                                                     channels_per_group))
        if reason is not None:
            raise ValueError(f"implementation='custom' cannot run this call on {device}: "
                             f"{reason}.")
        return "custom", f"requested explicitly; the compiled {device} kernel runs it"
    if placement.in_xla_context():
        return "reference", "auto inside an XLA-compiled function: XLA compiles the reference"
    if device == "CPU":
        return _auto_with_kernel(device, dtype, kernel_size, channels_per_group,
                                 fallback="reference",
                                 why="on CPU TF's threaded kernels beat XLA's loops")
    if device == "GPU":
        if not auto_runs_cuda_kernels():
            return "xla", ("auto on GPU: XLA fuses the window loop; the CUDA kernels have not "
                           "yet passed the harness on GPU hardware (implementation='custom' "
                           "runs them)")
        return _auto_with_kernel(device, dtype, kernel_size, channels_per_group,
                                 fallback="xla", why="XLA fuses the window loop")
    return "xla", f"auto on {device}: no compiled kernels there; XLA compiles the window loop"


def _auto_with_kernel(device, dtype, kernel_size, channels_per_group, fallback, why):
    """"auto" where the compiled kernel is preferred: it, else `fallback`."""
    unsupported = kernel.unsupported_reason(device, dtype, kernel_size,
                                                           channels_per_group)
    if unsupported is None:
        return "custom", f"auto on {device}: the compiled kernel supports this call"
    if kernel.library()[0] is None:
        _warn_missing_kernel(unsupported)
    return fallback, f"auto on {device}: {unsupported}; {why}"


@functools.lru_cache(maxsize=None)
def _warn_missing_kernel(reason):
    warnings.warn(f"keras_relnet: the compiled local relation kernel is unavailable ({reason}); "
                  "implementation='auto' uses the slower reference/xla path.", stacklevel=4)


def policy():
    """The policy of "auto" per device and context, one line each.

    Example:
    >>> policy().splitlines()[0]
    'inside XLA (jit_compile=True, TPU): "reference", compiled by XLA ("custom" raises)'
    """
    if auto_runs_cuda_kernels():
        gpu = (f'"custom" (the CUDA kernels, verified: {CUDA_KERNELS_VERIFIED}) where they '
               'support the call, else "xla"; LocalRelation2D.supports_jit is False')
    else:
        gpu = ('"xla" (the CUDA kernels have not yet passed the harness on GPU hardware; '
               'implementation="custom" runs them)')
    return "\n".join([
        'inside XLA (jit_compile=True, TPU): "reference", compiled by XLA ("custom" raises)',
        'CPU: "custom" (the compiled kernel) when it is built and supports the call, '
        'else "reference"',
        f"GPU: {gpu}",
        'other devices: "xla"',
    ])


def explain(implementation="auto", dtype=tf.float32, channels_per_group=None,
            kernel_size=None):
    """Which local relation implementation a call made here runs, and the policy.

    Args:
        implementation, dtype, channels_per_group, kernel_size: as in
            `resolve_implementation`.

    Returns:
        Lines of text: `"<name> (<reason>)"` for this call on the device and
        in the context where `explain` is called, then the policy of "auto"
        per device and context, then the kernel library's state. An
        implementation that cannot run here gives `"unavailable (<why>)"`.

    Example:
    >>> explain("xla").splitlines()[0]
    'xla (requested explicitly)'
    """
    try:
        name, reason = resolve_implementation(implementation, dtype, channels_per_group,
                                              kernel_size)
        decision = f"{name} ({reason})"
    except ValueError as error:
        decision = f"unavailable ({error})"
    module, load_failure = kernel.library()
    if module is None:
        kernels = f"not loaded: {load_failure}"
    else:
        loaded = kernel.loaded_library()
        devices = ", ".join(sorted(kernel.built_devices()))
        kernels = (f"{loaded.path} (CPU level {loaded.level}, from the {loaded.origin}, built "
                   f"for TensorFlow {loaded.tensorflow}; kernels for {devices})")
    indented = "\n".join(f"  {line}" for line in policy().splitlines())
    return (f"{decision}\nPolicy of implementation='auto':\n{indented}\n"
            f"Kernel library: {kernels}")
