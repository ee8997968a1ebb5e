"""Local relation: the kernel against a depthwise 7x7 convolution, and whole LR-Nets.

Three tables, every ratio taken within one run from interleaved rounds
(each round times every candidate once, the order reversing every round):

1. The local relation at the LR-Net-50 stage shapes (batch 8, 7x7 window,
   m = 8) and the stem (224x224x64, stride 2): the "custom" (compiled kernel),
   "reference" and "xla" implementations, a naive `tf.image.extract_patches`
   version (checked against the reference first) and a `DepthwiseConv2D` 7x7
   of the same shape (the practical floor: the same multiply-add count).
   Forward and forward+backward times, the allocator's peak memory for one
   forward+backward, and ratios to the depthwise convolution.
2. What the kernel's forward achieves against the machine's peak, measured
   first (the fastest of several calls): a large float32 matmul (GFLOP/s)
   and a large multiply that reads and writes every element once (GB/s).
   The kernel's GFLOP/s count the k*k*C multiply-adds of the aggregation and
   the k*k*G of the logits (exponentials not counted); its GB/s, the bytes it
   must read and write at least (query, key, value, output).
3. Whole models, LR-Net-50 (`implementation="auto"`) against ResNet-50:
   inference (`model(x, training=False)` in a `tf.function`) at batch 1 and
   8, and one `train_on_batch` (SGD) at batch 8, all 224x224.

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
from keras_relnet.ops.local_relation import output_size  # noqa: E402
from keras_relnet.utils.flops import local_relation_aggregation_flops  # noqa: E402
from timing import fastest_ms, interleaved_medians, peak_memory_mb  # noqa: E402

BATCH, KERNEL, GROUP_SIZE = 8, 7, 8
# (size, channels, strides): the LR-Net-50 stages res2-res5 and the stem.
STAGE_SHAPES = [(56, 104, 1), (28, 200, 1), (14, 400, 1), (7, 800, 1)]
STEM_SHAPE = (224, 64, 2)


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


def relation_inputs(size, channels, strides=1, seed=0):
    """Query, key, value and prior of one batch-8 call at `size`^2 x `channels`."""
    groups = channels // GROUP_SIZE
    out = output_size(size, strides)
    rng = np.random.default_rng(seed)
    shapes = [(BATCH, out, out, groups), (BATCH, size, size, groups),
              (BATCH, size, size, channels), (groups, KERNEL, KERNEL)]
    return [tf.constant(rng.normal(size=s), tf.float32) for s in shapes]


def candidates(size, channels, strides, implementations):
    """name -> (function of its inputs, inputs); the naive version only at stride 1."""
    relation = relation_inputs(size, channels, strides)
    depthwise = [relation[2], tf.random.normal([KERNEL, KERNEL, channels, 1])]
    run = lambda implementation: (
        lambda q, k, v, p: ops.local_relation_aggregation(
            q, k, v, p, strides=strides, implementation=implementation))
    chosen = {name: (run(name), relation) for name in implementations}
    if strides == 1:
        chosen["naive extract_patches"] = (naive_local_relation, relation)
    chosen["depthwise 7x7"] = (lambda v, w: tf.nn.depthwise_conv2d(
        v, w, [1, strides, strides, 1], "SAME"), depthwise)
    return chosen


def forward_and_backward(function):
    """`tf.function`s of the forward and of the gradient of a sum of squares."""
    @tf.function
    def forward_backward(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(tf.square(function(*args)))
        return tape.gradient(loss, args)

    return tf.function(lambda *a: function(*a)), forward_backward


def measure_shape(size, channels, strides, implementations, rounds):
    """`{name: (fwd ms, fwd+bwd ms, peak MiB)}` for every candidate at one shape."""
    steps, memory = {}, {}
    for name, (function, inputs) in candidates(size, channels, strides,
                                               implementations).items():
        forward, backward = forward_and_backward(function)
        steps[(name, "fwd")] = lambda f=forward, a=inputs: f(*a).numpy()
        steps[(name, "fwd+bwd")] = lambda f=backward, a=inputs: [g.numpy() for g in f(*a)]
        memory[name] = steps[(name, "fwd+bwd")]
    times = interleaved_medians(steps, rounds)
    return {name: (times[(name, "fwd")], times[(name, "fwd+bwd")], peak_memory_mb(step))
            for name, step in memory.items()}


def machine_peaks(rounds):
    """`(matmul GFLOP/s, copy GB/s)`, the fastest of several calls, with TensorFlow on all cores."""
    n = 2048
    a, b = tf.random.normal([n, n]), tf.random.normal([n, n])
    big = tf.random.normal([64 * 2**20 // 4])
    scale = tf.Variable(1.0)
    matmul = tf.function(lambda: tf.matmul(a, b))
    copy = tf.function(lambda: big * scale)
    matmul_ms = fastest_ms(lambda: matmul().numpy(), 3 * rounds)
    copy_ms = fastest_ms(lambda: copy().numpy(), 3 * rounds)
    return 2 * n**3 / matmul_ms / 1e6, 2 * big.shape[0] * 4 / copy_ms / 1e6


def forward_work(size, channels, strides):
    """`(flops, bytes)` the forward must do and move at least: two flops per
    multiply-add of `local_relation_aggregation_flops`, and q, k, v read and y written."""
    groups, out = channels // GROUP_SIZE, output_size(size, strides)
    flops = 2 * BATCH * local_relation_aggregation_flops((size, size), channels, GROUP_SIZE,
                                                         KERNEL, strides)
    moved = 4 * BATCH * (out * out + size * size) * (groups + channels)
    return flops, moved


def print_kernel_tables(shapes, implementations, rounds):
    """Table 1; returns `{shape label: rows}` for the checks."""
    header = (f"{'shape':>14} {'implementation':<22} {'fwd ms':>8} {'fwd+bwd ms':>11} "
              f"{'peak MiB':>9} {'fwd vs dw':>10} {'f+b vs dw':>10} {'vs naive':>9} "
              f"{'peak/(in+out)':>14}")
    print(header + "\n" + "-" * len(header))
    results = {}
    for size, channels, strides in shapes:
        rows = measure_shape(size, channels, strides, implementations, rounds)
        if strides == 1:
            reference = ops.local_relation_aggregation(*relation_inputs(size, channels),
                                                       implementation="reference")
            naive = naive_local_relation(*relation_inputs(size, channels))
            np.testing.assert_allclose(naive.numpy(), reference.numpy(), atol=1e-4)
        out = output_size(size, strides)
        input_output_mib = BATCH * (size * size + out * out) * channels * 4 / 2**20
        floor = rows["depthwise 7x7"]
        slow = rows.get("naive extract_patches", (None, None))[1]
        label = f"{size}x{size}x{channels}" + (f"/s{strides}" if strides > 1 else "")
        for name, (forward_ms, backward_ms, peak) in rows.items():
            naive_column = f"{slow / backward_ms:8.1f}x" if slow else f"{'-':>9}"
            print(f"{label:>14} {name:<22} {forward_ms:8.1f} {backward_ms:11.1f} "
                  f"{peak:9.1f} {forward_ms / floor[0]:9.2f}x {backward_ms / floor[1]:9.2f}x "
                  f"{naive_column} {peak / input_output_mib:13.1f}x")
        results[label] = rows
    print("fwd vs dw, f+b vs dw: time / the depthwise 7x7's (lower is better); "
          "vs naive: naive fwd+bwd time / this one (higher is better).")
    return results


def print_roofline(shapes, results, rounds):
    """Table 2: the kernel's forward against the machine's peaks."""
    matmul_gflops, copy_gbs = machine_peaks(rounds)
    print(f"\nMachine peak, measured now: matmul {matmul_gflops:.0f} GFLOP/s (float32, "
          f"2048^2), copy {copy_gbs:.1f} GB/s (read + write of 64 MiB).")
    header = (f"{'shape':>14} {'custom fwd ms':>14} {'GFLOP/s':>8} {'of peak':>8} "
              f"{'GB/s':>6} {'of peak':>8}")
    print(header + "\n" + "-" * len(header))
    for (size, channels, strides), (label, rows) in zip(shapes, results.items()):
        flops, moved = forward_work(size, channels, strides)
        forward_ms = rows["custom"][0]
        gflops, gbs = flops / forward_ms / 1e6, moved / forward_ms / 1e6
        print(f"{label:>14} {forward_ms:14.2f} {gflops:8.1f} {gflops / matmul_gflops:7.0%} "
              f"{gbs:6.1f} {gbs / copy_gbs:7.0%}")


def whole_model_steps(model, batch, training):
    """One inference call or one `train_on_batch` of `model` at `batch` x 224^2."""
    images = tf.random.stateless_uniform([batch, 224, 224, 3], [0, 0])
    if not training:
        infer = tf.function(lambda x: model(x, training=False))
        return lambda: infer(images).numpy()
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    labels = tf.random.stateless_uniform([batch], [0, 1], maxval=1000, dtype=tf.int32)
    return lambda: model.train_on_batch(images, labels)


def print_whole_models(rounds, quick):
    """Table 3; returns `{measurement: LR-Net-50 / ResNet-50}`."""
    models = {"ResNet-50": applications.ResNet50(), "LR-Net-50": applications.LRNet50()}
    cases = [("inference, batch 1", 1, False), ("inference, batch 8", 8, False),
             ("train_on_batch, batch 8", 8, True)]
    if quick:
        cases = cases[:1]
    print(f"\nWhole models, 224x224, LR-Net-50 (implementation 'auto') against ResNet-50, "
          f"median of {rounds} interleaved rounds:")
    header = f"{'measurement':<26} {'ResNet-50 ms':>13} {'LR-Net-50 ms':>13} {'ratio':>7}"
    print(header + "\n" + "-" * len(header))
    ratios = {}
    for label, batch, training in cases:
        times = interleaved_medians(
            {name: whole_model_steps(model, batch, training) for name, model in models.items()},
            rounds)
        ratios[label] = times["LR-Net-50"] / times["ResNet-50"]
        print(f"{label:<26} {times['ResNet-50']:13.1f} {times['LR-Net-50']:13.1f} "
              f"{ratios[label]:6.2f}x")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="two smallest shapes, fewer rounds, inference at batch 1 only")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    shapes = STAGE_SHAPES[-2:] if args.quick else STAGE_SHAPES + [STEM_SHAPE]
    rounds = 3 if args.quick else args.rounds
    implementations = ["custom"] if args.quick else ["custom", "reference", "xla"]

    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; batch {BATCH}, "
          f"k = {KERNEL}, m = {GROUP_SIZE}; times are medians of {rounds} interleaved rounds.")
    results = print_kernel_tables(shapes, implementations, rounds)
    print_roofline(shapes, results, rounds)
    print_whole_models(rounds, args.quick)


if __name__ == "__main__":
    main()
