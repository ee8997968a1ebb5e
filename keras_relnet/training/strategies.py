"""`tf.distribute` strategies by name, for the command line and configs."""

import json
import os

import tensorflow as tf

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")


def make_strategy(name="auto", devices=None, tpu=None):
    """The distribution strategy called `name`.

    Args:
        name: "auto" (mirrored over the GPUs when there are several, else one
            device), "one_device", "mirrored", "multi_worker"
            (MultiWorkerMirroredStrategy, cluster from the `TF_CONFIG`
            environment variable) or "tpu".
        devices: devices of "mirrored" (default: all GPUs, else the CPU), e.g.
            `["/cpu:0", "/cpu:1"]`.
        tpu: TPU name or address for "tpu" (default: the local TPU, "").

    Returns:
        A `tf.distribute.Strategy`.

    Example:
    >>> make_strategy("one_device").num_replicas_in_sync
    1
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}; received {name!r}.")
    # Physical devices: listing logical ones would start the runtime, after
    # which MultiWorkerMirroredStrategy can no longer configure collectives.
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 or devices else "one_device"
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "`strategy` 'multi_worker' reads the cluster from the TF_CONFIG "
                "environment variable, which is not set."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief():
    """Whether this process writes checkpoints and logs (always, outside a cluster).

    Example:
    >>> is_chief()
    True
    """
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task")
    if not task:
        return True
    if "chief" in config.get("cluster", {}):
        return task["type"] == "chief"
    return task["type"] == "worker" and task.get("index", 0) == 0
