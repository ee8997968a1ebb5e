"""Timing and memory helpers shared by the benchmark scripts."""

import time

import numpy as np
import tensorflow as tf


def median_ms(step, repeats):
    """Median wall time of `step()` in ms, after two warm-up calls (trace, compile)."""
    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def peak_memory_mb(step):
    """Peak bytes TensorFlow's CPU allocator holds during `step()`, above the start, in MiB."""
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step()
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 2**20
