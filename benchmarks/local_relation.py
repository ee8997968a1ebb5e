"""Local relation layer: time and peak memory of each implementation.

At the LR-Net-50 stage shapes (batch 8, 7x7 window, m = 8) this prints, for
the "custom" (compiled kernel), "reference" and "xla" implementations, a naive `tf.image.extract_patches`
version and a `DepthwiseConv2D` 7x7 of the same shape (the practical floor:
the same multiply-add count), the forward and forward+backward times, the peak
memory TensorFlow's allocator reports for one forward+backward, and ratios
against the depthwise convolution and the naive version, all measured in this
run. The naive version is checked against the reference before timing.

It then times one training step (forward, backward, SGD update) of LR-Net-50
against ResNet-50 at batch 8, 224x224, with each local relation
implementation, the ResNet-50 step measured in the same run.

Run: `make bench` or `.venv/bin/python benchmarks/local_relation.py [--quick]`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow keeps CPU allocator statistics (the peak-memory column) only for BFC.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras  # noqa: E402

from keras_relnet import applications, ops  # noqa: E402
from timing import median_ms, peak_memory_mb  # noqa: E402

BATCH, KERNEL, GROUP_SIZE = 8, 7, 8
STAGE_SHAPES = [(56, 104), (28, 200), (14, 400), (7, 800)]  # LR-Net-50 res2-res5


def naive_local_relation(query, key, value, prior):
    """Stride-1 local relation through k*k-times-larger patch tensors."""
    batch, height, width, channels = value.shape
    groups, kernel = prior.shape[0], prior.shape[-1]
    cells = kernel * kernel
    patches = lambda t: tf.image.extract_patches(
        t, [1, kernel, kernel, 1], [1, 1, 1, 1], [1, 1, 1, 1], "SAME")
    key_cells = tf.reshape(patches(key), [batch, height, width, cells, groups])
    value_cells = tf.reshape(patches(value),
                             [batch, height, width, cells, groups, channels // groups])
    inside = tf.reshape(patches(tf.ones([1, height, width, 1])), [1, height, width, cells, 1])
    logits = (-tf.square(query[:, :, :, None, :] - key_cells)
              + tf.transpose(tf.reshape(prior, [groups, cells])))
    weights = tf.nn.softmax(tf.where(inside > 0, logits, -np.inf), axis=3)
    return tf.reshape(tf.einsum("bhwkg,bhwkgt->bhwgt", weights, value_cells),
                      [batch, height, width, channels])


def relation_inputs(size, channels, seed=0):
    groups = channels // GROUP_SIZE
    rng = np.random.default_rng(seed)
    shapes = [(BATCH, size, size, groups), (BATCH, size, size, groups),
              (BATCH, size, size, channels), (groups, KERNEL, KERNEL)]
    return [tf.constant(rng.normal(size=s), tf.float32) for s in shapes]


def candidates(size, channels):
    """name -> (function of its inputs, inputs)."""
    relation = relation_inputs(size, channels)
    depthwise = [relation[2], tf.random.normal([KERNEL, KERNEL, channels, 1])]
    run = lambda implementation: (
        lambda q, k, v, p: ops.local_relation_aggregation(q, k, v, p,
                                                          implementation=implementation))
    return {
        "custom": (run("custom"), relation),
        "reference": (run("reference"), relation),
        "xla": (run("xla"), relation),
        "naive extract_patches": (naive_local_relation, relation),
        "depthwise 7x7": (lambda v, w: tf.nn.depthwise_conv2d(
            v, w, [1, 1, 1, 1], "SAME"), depthwise),
    }


def measure(function, inputs, repeats):
    forward = tf.function(lambda *a: function(*a))

    @tf.function
    def forward_backward(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(tf.square(function(*args)))
        return tape.gradient(loss, args)

    forward_ms = median_ms(lambda: forward(*inputs).numpy(), repeats)
    step = lambda: [g.numpy() for g in forward_backward(*inputs)]
    backward_ms = median_ms(step, repeats)
    return forward_ms, backward_ms, peak_memory_mb(step)


def training_step_ms(model, repeats, batch=BATCH, size=224):
    """Median ms of one `train_on_batch` (SGD, sparse cross-entropy) at `batch` x size^2."""
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    images = tf.random.stateless_uniform([batch, size, size, 3], [0, 0])
    labels = tf.random.stateless_uniform([batch], [0, 1], maxval=1000, dtype=tf.int32)
    return median_ms(lambda: model.train_on_batch(images, labels), repeats)


def training_steps(repeats, implementations):
    """Prints LR-Net-50 training-step times against ResNet-50's, measured now."""
    resnet = training_step_ms(applications.ResNet50(), repeats)
    print(f"\nTraining step, batch {BATCH}, 224x224, median of {repeats}:")
    print(f"{'model':<32} {'step ms':>9} {'vs ResNet-50':>13}")
    print(f"{'ResNet-50':<32} {resnet:9.0f} {1.0:12.2f}x")
    for implementation in implementations:
        model = applications.LRNet50(relation_options={"implementation": implementation})
        step = training_step_ms(model, repeats)
        print(f"{f'LR-Net-50 ({implementation})':<32} {step:9.0f} {step / resnet:12.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="two smallest shapes, fewer repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    shapes = STAGE_SHAPES[-2:] if args.quick else STAGE_SHAPES
    repeats = 2 if args.quick else args.repeats

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; batch {BATCH}, "
          f"k = {KERNEL}, m = {GROUP_SIZE}; times are medians of {repeats}.")
    header = (f"{'shape':>12} {'implementation':<22} {'fwd ms':>8} {'fwd+bwd ms':>11} "
              f"{'peak MiB':>9} {'vs dwconv':>10} {'vs naive':>9} {'peak/(in+out)':>14}")
    print(header + "\n" + "-" * len(header))
    for size, channels in shapes:
        rows = {}
        for name, (function, inputs) in candidates(size, channels).items():
            rows[name] = measure(function, inputs, repeats)
        reference = ops.local_relation_aggregation(*relation_inputs(size, channels),
                                       implementation="reference")
        naive = naive_local_relation(*relation_inputs(size, channels))
        np.testing.assert_allclose(naive.numpy(), reference.numpy(), atol=1e-4)
        input_output_mib = 2 * BATCH * size * size * channels * 4 / 2**20
        floor, slow = rows["depthwise 7x7"][1], rows["naive extract_patches"][1]
        for name, (forward_ms, backward_ms, peak) in rows.items():
            print(f"{f'{size}x{size}x{channels}':>12} {name:<22} {forward_ms:8.1f} "
                  f"{backward_ms:11.1f} {peak:9.1f} {backward_ms / floor:9.1f}x "
                  f"{slow / backward_ms:8.1f}x {peak / input_output_mib:13.1f}x")
    print("vs dwconv: fwd+bwd time / depthwise 7x7 fwd+bwd (lower is better); "
          "vs naive: naive fwd+bwd time / this one (higher is better).")
    training_steps(repeats, ["custom"] if args.quick else ["custom", "reference"])


if __name__ == "__main__":
    main()
