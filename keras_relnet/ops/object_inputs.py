"""Checks of the inputs of the ops that take objects: features, boxes, masks,
scores and feature maps that must agree on the batch, the object count and
the width the weights were built for.

A size known from the static shapes (eager tensors, graphs with static
shapes) is checked at once with a `ValueError` naming both arguments and
their shapes; a size known only when the graph runs gets a
`tf.debugging.assert_equal` with the same words (an `InvalidArgumentError`
then). Exported graphs get no run-time assertions (they are not builtin ops
of TFLite); the exported signature fixes what can be fed instead.
"""

import tensorflow as tf

from keras_relnet.ops.portable import portable_graphs_requested


def _tensor(value):
    """`value` as a tensor (NumPy arrays and lists are accepted like TF's ops do)."""
    return value if tf.is_tensor(value) else tf.convert_to_tensor(value)


def shape_text(tensor):
    """A shape for messages: `(2, None, 4)`, or "unknown"."""
    shape = _tensor(tensor).shape
    return tuple(shape.as_list()) if shape.rank is not None else "unknown"


def check_same_dims(first_name, first, second_name, second, axes):
    """Checks that two tensors agree on the given axes.

    Args:
        first_name, second_name: argument names for the message.
        first, second: the tensors.
        axes: `(first_axis, second_axis, what)` triples, e.g.
            `((0, 0, "batch"), (1, 1, "objects"))`.

    Returns:
        `(first, second)`; where a size is known only at run time, both pass
        through the assertion, so that nothing computed from them runs (and
        fails with a less clear message) before it.

    Raises:
        ValueError: for a static mismatch.

    Example:
    >>> check_same_dims("features", tf.zeros([2, 5, 8]), "boxes", tf.zeros([1, 5, 4]),
    ...                 ((0, 0, "batch"),))
    Traceback (most recent call last):
    ...
    ValueError: `features` and `boxes` must have the same batch size; received shapes (2, 5, 8) and (1, 5, 4).
    """
    first, second = _tensor(first), _tensor(second)
    assertions = []
    for first_axis, second_axis, what in axes:
        message = (f"`{first_name}` and `{second_name}` must have the same {what} size; "
                   f"received shapes {shape_text(first)} and {shape_text(second)}.")
        size, other = first.shape[first_axis], second.shape[second_axis]
        if size is not None and other is not None:
            if size != other:
                raise ValueError(message)
        elif not portable_graphs_requested():
            assertions.append(tf.debugging.assert_equal(
                tf.shape(first)[first_axis], tf.shape(second)[second_axis], message=message))
    if not assertions or tf.executing_eagerly():
        return first, second
    with tf.control_dependencies(assertions):
        return tf.identity(first), tf.identity(second)


def check_rank(name, tensor, rank, layout):
    """Checks a tensor's rank (and that it is known).

    Example:
    >>> check_rank("boxes", tf.zeros([2, 4]), 3, "[batch, objects, 4]")
    Traceback (most recent call last):
    ...
    ValueError: `boxes` must be a rank-3 tensor [batch, objects, 4]; received shape (2, 4).
    """
    if _tensor(tensor).shape.rank != rank:
        raise ValueError(f"`{name}` must be a rank-{rank} tensor {layout}; received shape "
                         f"{shape_text(tensor)}.")


def check_width(name, tensor, width, built_for):
    """Checks the last dimension against the width the weights were built for.

    Example:
    >>> check_width("features", tf.zeros([1, 3, 16]), 32, "the layer's weights")
    Traceback (most recent call last):
    ...
    ValueError: `features` must have 32 channels (the width of the layer's weights); received shape (1, 3, 16).
    """
    size = _tensor(tensor).shape[-1]
    if size is not None and size != width:
        raise ValueError(f"`{name}` must have {width} channels (the width of {built_for}); "
                         f"received shape {shape_text(tensor)}.")


def check_boxes(name, boxes):
    """Checks `[batch, objects, 4]` boxes.

    Example:
    >>> check_boxes("boxes", tf.zeros([1, 3, 5]))
    Traceback (most recent call last):
    ...
    ValueError: `boxes` must have shape [batch, objects, 4]; received shape (1, 3, 5).
    """
    check_rank(name, boxes, 3, "[batch, objects, 4]")
    if _tensor(boxes).shape[-1] != 4:
        raise ValueError(f"`{name}` must have shape [batch, objects, 4]; received shape "
                         f"{shape_text(boxes)}.")


def check_object_mask(name, mask, objects_name, objects):
    """Checks a `[batch, objects]` bool mask against `[batch, objects, ...]` inputs.

    Returns:
        `(objects, mask)` as `check_same_dims` returns them.

    Example:
    >>> check_object_mask("key_mask", tf.ones([1, 3]), "features", tf.zeros([1, 3, 8]))
    Traceback (most recent call last):
    ...
    ValueError: `key_mask` must be a bool tensor; received dtype float32.
    """
    mask = _tensor(mask)
    if mask.dtype != tf.bool:
        raise ValueError(f"`{name}` must be a bool tensor; received dtype {mask.dtype.name}.")
    check_rank(name, mask, 2, "[batch, objects]")
    return check_same_dims(objects_name, objects, name, mask,
                           ((0, 0, "batch"), (1, 1, "objects")))


def finite_boxes(boxes):
    """`(finite [..., N] bool, boxes with every non-finite box set to zeros)`.

    Example:
    >>> finite, safe = finite_boxes(tf.constant([[0.0, 0, 1, 1], [0, float("nan"), 1, 1]]))
    >>> finite.numpy().tolist(), safe.numpy()[1].tolist()
    ([True, False], [0.0, 0.0, 0.0, 0.0])
    """
    finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
    return finite, tf.where(tf.expand_dims(finite, -1), boxes, tf.zeros_like(boxes))
