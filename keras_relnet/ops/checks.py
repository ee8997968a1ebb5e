"""Argument checks shared by the ops and the layers.

Each check raises a `ValueError` that names the argument, what was expected
and what was received, so a user never has to read a stack trace from deep
inside TensorFlow to learn what was wrong.
"""

import math
import numbers


def _same_kind(value, choice):
    """Equal and of the same kind: 1.0 and True are not the int choice 1."""
    if isinstance(choice, numbers.Integral) and not isinstance(choice, bool):
        return _is_int(value) and value == choice
    return type(value) is type(choice) and value == choice


def check_choice(name, value, choices):
    """Checks that `value` is one of `choices` (of the same kind: a float or
    a bool never stands for an int choice).

    Args:
        name: argument name used in the error message.
        value: the received value.
        choices: the allowed values.

    Returns:
        The matching choice.

    Example:
    >>> check_choice("composability", "dot", ("dot", "squared_difference"))
    'dot'
    >>> check_choice("strides", 1.0, (1, 2))
    Traceback (most recent call last):
    ...
    ValueError: `strides` must be one of [1, 2]; received 1.0.
    """
    for choice in choices:
        if _same_kind(value, choice):
            return choice
    raise ValueError(
        f"`{name}` must be one of {list(choices)}; received {value!r}."
    )


def _is_int(value):
    """Integral; booleans are not integers here."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral)


def _is_positive_int(value):
    """Integral and >= 1; booleans are not integers here."""
    return _is_int(value) and value >= 1


def check_positive_int(name, value):
    """Checks that `value` is an integer >= 1 (booleans are rejected).

    Args:
        name: argument name used in the error message.
        value: the received value.

    Returns:
        `value` as a Python `int`.

    Example:
    >>> check_positive_int("channels_per_group", 8)
    8
    """
    if not _is_positive_int(value):
        raise ValueError(
            f"`{name}` must be a positive integer; received {value!r}."
        )
    return int(value)


def check_odd_positive_int(name, value):
    """Checks that `value` is an odd integer >= 1 (a window with a centre).

    Args:
        name: argument name used in the error message.
        value: the received value.

    Returns:
        `value` as a Python `int`.

    Example:
    >>> check_odd_positive_int("kernel_size", 7)
    7
    """
    if not _is_positive_int(value) or value % 2 == 0:
        raise ValueError(
            f"`{name}` must be an odd positive integer (the window needs a "
            f"centre cell); received {value!r}."
        )
    return int(value)


def check_rank(name, shape, rank, layout):
    """Checks that a tensor shape has the expected rank.

    Args:
        name: argument name used in the error message.
        shape: the received shape (a tuple or a `tf.TensorShape`).
        rank: the expected rank.
        layout: a human description of the expected axes, e.g.
            `"[batch, height, width, channels]"`.

    Returns:
        `shape` as a tuple.

    Example:
    >>> check_rank("inputs", (2, 8, 8, 16), 4, "[batch, height, width, channels]")
    (2, 8, 8, 16)
    """
    dims = tuple(shape) if shape is not None else None
    if dims is None or len(dims) != rank:
        raise ValueError(
            f"`{name}` must be a rank-{rank} tensor {layout}; received shape "
            f"{dims if dims is not None else 'of unknown rank'}."
        )
    return dims


def _is_finite_real(value):
    """A finite real number; booleans are not numbers here."""
    return (not isinstance(value, bool) and isinstance(value, numbers.Real)
            and math.isfinite(value))


def check_finite_number(name, value):
    """Checks that `value` is a finite real number (NaN, inf and bools are not).

    Returns:
        `value` as a Python `float`.

    Example:
    >>> check_finite_number("scale", 0.5)
    0.5
    """
    if not _is_finite_real(value):
        raise ValueError(f"`{name}` must be a finite number; received {value!r}.")
    return float(value)


def check_positive_number(name, value):
    """Checks that `value` is a finite real number > 0, e.g. a ratio.

    Returns:
        `value` as a Python `float`.

    Example:
    >>> check_positive_number("ratio", 0.25)
    0.25
    """
    if not (_is_finite_real(value) and value > 0):
        raise ValueError(f"`{name}` must be a positive number; received {value!r}.")
    return float(value)


def checked_channels(name, input_shape):
    """The known channel count of a `[batch, height, width, channels]` input.

    Args:
        name: argument name used in the error message.
        input_shape: the received shape.

    Returns:
        The channel count as an int.

    Example:
    >>> checked_channels("inputs", (None, 8, 8, 16))
    16
    """
    dims = check_rank(name, input_shape, 4, "[batch, height, width, channels]")
    if dims[-1] is None:
        raise ValueError(
            f"`{name}` must have a known channel dimension; received shape {dims}."
        )
    return int(dims[-1])


def checked_reduced_width(channels, ratio, unit):
    """The width `int(channels * ratio)` of a bottleneck, which must be >= 1.

    Args:
        channels: the input channel count C.
        ratio: the layer's `ratio` argument.
        unit: what the width counts, for the message ("channels", ...).

    Returns:
        `int(channels * ratio)`.

    Example:
    >>> checked_reduced_width(1024, 1 / 16, "channels")
    64
    """
    width = int(channels * ratio)
    if width < 1:
        raise ValueError(
            f"`ratio` ({ratio}) gives int({channels} * {ratio}) = {width} < 1 "
            f"{unit} for {channels} input channels."
        )
    return width
