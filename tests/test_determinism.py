"""Seeded training with `enable_op_determinism()` gives bit-identical weights,
with the compiled local relation kernel, at one and two intra-op threads.

Each training runs in a fresh process: the thread count can only be set
before TensorFlow starts, and two processes share nothing (no cached state,
no warm allocator) that could make a varying reduction order agree by luck.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

TRAINING = r"""
import hashlib, json, sys
import tensorflow as tf
threads = int(sys.argv[1])
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
import keras
import numpy as np
from keras_relnet.applications import LRNet
from keras_relnet.ops.local_relation import explain

keras.utils.set_random_seed(0)
tf.config.experimental.enable_op_determinism()
model = LRNet((1, 1, 1, 1), width_multiplier=0.25, input_shape=(32, 32, 3), classes=4)
model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.normal(size=(9, 32, 32, 3)).astype("float32")
y = rng.integers(0, 4, size=9)
# Batches of 4, 4 and 1: with two threads the kernel's backward runs both its
# per-image pass (batch >= threads) and its two-pass form (batch < threads).
history = model.fit(x, y, batch_size=4, epochs=2, shuffle=True, verbose=0)
digest = hashlib.sha256()
for weight in model.weights:
    digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
print(json.dumps({"digest": digest.hexdigest(), "losses": history.history["loss"],
                  "path": explain().splitlines()[0]}))
"""


def train_in_a_fresh_process(threads):
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", TRAINING, str(threads)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("threads", [1, 2])
def test_two_seeded_trainings_give_bit_identical_weights(threads):
    first, second = train_in_a_fresh_process(threads), train_in_a_fresh_process(threads)
    assert first["path"].startswith("custom"), first["path"]  # the compiled kernel ran
    assert len(set(first["losses"])) == 2  # it trained: the loss moved
    assert first["digest"] == second["digest"], (first, second)


@pytest.mark.parametrize("batch", [1, 4])
def test_kernel_gradients_are_bit_identical_from_call_to_call(batch):
    # Batch 1 on this process's threads runs the backward's two passes, batch
    # 4 its per-image pass; a larger layer than the training above, so more
    # blocks of work whose partial sums must be added in a fixed order.
    import tensorflow as tf

    from keras_relnet.ops.local_relation import local_relation_aggregation

    rng = np.random.default_rng(batch)
    query, key = (tf.constant(rng.normal(size=(batch, 28, 28, 13)), tf.float32)
                  for _ in range(2))
    value = tf.constant(rng.normal(size=(batch, 28, 28, 104)), tf.float32)
    prior = tf.constant(rng.normal(size=(13, 7, 7)), tf.float32)
    d_output = tf.constant(rng.normal(size=(batch, 28, 28, 104)), tf.float32)

    def gradients():
        with tf.GradientTape() as tape:
            tape.watch([query, key, value, prior])
            output = local_relation_aggregation(query, key, value, prior,
                                                implementation="custom")
        return [g.numpy() for g in tape.gradient(output, [query, key, value, prior],
                                                 output_gradients=d_output)]

    first = gradients()
    for _ in range(3):
        for a, b in zip(first, gradients()):
            assert a.tobytes() == b.tobytes()
