"""Timing and memory helpers shared by the benchmark scripts."""

import time

import numpy as np
import tensorflow as tf


def call_times(step, repeats):
    """Wall times of `repeats` calls of `step()` in seconds, after two warm-up
    calls (trace, compile, first allocations)."""
    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def median_ms(step, repeats):
    """Median wall time of `step()` in ms, after two warm-up calls."""
    return 1e3 * float(np.median(call_times(step, repeats)))


def fastest_ms(step, repeats):
    """The fastest of `repeats` calls of `step()` in ms, after two warm-up calls:
    a peak rate is what the machine can do, so noise from neighbours is left out."""
    return 1e3 * min(call_times(step, repeats))


def interleaved_medians(steps, rounds):
    """`{key: median ms}` over `rounds` rounds that each time every step once.

    On a shared machine speed drifts by several percent over a minute, so
    steps are never timed one after another: every round times each step
    once, in an order that reverses every round (ABBA), after two warm-up
    calls of each (trace, compile, first allocations).

    Args:
        steps: `{key: function of no arguments}`.
        rounds: rounds to time.

    Returns:
        `{key: median ms}`, in the order of `steps`.

    Example:
    >>> sorted(interleaved_medians({"a": lambda: None, "b": lambda: None}, 3))
    ['a', 'b']
    """
    for step in steps.values():
        step()
        step()
    times = {key: [] for key in steps}
    for round_index in range(rounds):
        keys = list(steps)[::-1] if round_index % 2 else list(steps)
        for key in keys:
            start = time.perf_counter()
            steps[key]()
            times[key].append(time.perf_counter() - start)
    return {key: 1e3 * float(np.median(values)) for key, values in times.items()}


def peak_memory_mb(step):
    """Peak bytes TensorFlow's CPU allocator holds during `step()`, above the start, in MiB."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step()
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2**20
