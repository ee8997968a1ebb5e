"""Test setup: two logical CPU devices (for MirroredStrategy), a clean dtype
policy around every test, and the names docstring examples use."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Logical devices can only be configured before TensorFlow initialises them.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)


@pytest.fixture(autouse=True)
def float32_policy():
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(autouse=True)
def docstring_names(doctest_namespace):
    doctest_namespace.update(np=np, tf=tf, keras=keras)


@pytest.fixture(scope="session")
def two_cpu_strategy():
    """One MirroredStrategy over the two logical CPUs, shared by the tests that
    train under it: strategies made one after another in a process can reuse
    collective instance keys and abort each other's all-reduces."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
