"""Portable graphs: what the ops build while a model is being exported.

Inside `portable_graphs()`, every op builds its graph only from ops that
TFLite (as builtins) and ONNX support: the local relation layer runs a
vectorised, gradient-free forward with finite masking (no `tf.while_loop`
over a TensorArray, no -inf), nothing is XLA-compiled, and the object
relation module attends to all queries at once instead of looping over
chunks (TensorList ops have no builtin lowering). Training and eager use are
unaffected.
"""

import contextlib
import threading

_state = threading.local()


@contextlib.contextmanager
def portable_graphs():
    """Within this context, ops trace export-friendly graphs.

    Example:
    >>> with portable_graphs():
    ...     portable_graphs_requested()
    True
    >>> portable_graphs_requested()
    False
    """
    previous = portable_graphs_requested()
    _state.requested = True
    try:
        yield
    finally:
        _state.requested = previous


def portable_graphs_requested():
    """Whether ops are being traced inside `portable_graphs()`.

    Example:
    >>> portable_graphs_requested()
    False
    """
    return getattr(_state, "requested", False)
