"""Object relation module: time, peak memory and overhead over the 2fc box head.

At N = 300, 512 and 1000 RoIs (one image), D = 1024, 16 heads: the module's
forward time and peak memory (chunked over queries, and in one piece), and
the forward and forward+backward times of the plain 2fc head and the 2fc+RM
head on `[N, 7, 7, 256]` RoI features (81 classes), measured in one run, with
the overhead as a ratio. Multiply-adds are counted analytically.

Run: `make bench` or `.venv/bin/python benchmarks/object_relation.py [--quick]`.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow keeps CPU allocator statistics (the peak-memory column) only for BFC.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_relnet.layers import ObjectRelation, RelationBoxHead  # noqa: E402
from timing import median_ms, peak_memory_mb  # noqa: E402

WIDTH, HEADS, GEOMETRY_DIM, CLASSES = 1024, 16, 64, 81
CROP = (7, 7, 256)


def relation_macs(count):
    """Q, K, V projections, Q.K and A.V, and the geometry embedding's projection."""
    return 3 * count * WIDTH**2 + 2 * count**2 * WIDTH + count**2 * GEOMETRY_DIM * HEADS


def head_macs(count):
    flat = int(np.prod(CROP))
    return count * (flat * WIDTH + WIDTH**2 + WIDTH * 5 * CLASSES)


def random_rois(count, seed=0):
    rng = np.random.default_rng(seed)
    corner = rng.uniform(0, 800, size=(1, count, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(16, 300, size=(1, count, 2))], -1)
    return (rng.normal(size=(1, count) + CROP).astype("float32"), boxes.astype("float32"),
            rng.normal(size=(1, count, WIDTH)).astype("float32"))


def head_times(head, crops, boxes, repeats):
    forward = tf.function(lambda c, b: head(c, b))

    @tf.function
    def forward_backward(c, b):
        with tf.GradientTape() as tape:
            logits, deltas = head(c, b)
            loss = tf.reduce_sum(tf.square(logits)) + tf.reduce_sum(tf.square(deltas))
        return tape.gradient(loss, head.trainable_variables)

    return (median_ms(lambda: [t.numpy() for t in forward(crops, boxes)], repeats),
            median_ms(lambda: [g.numpy() for g in forward_backward(crops, boxes)], repeats))


def module_row(count, repeats):
    crops, boxes, features = random_rois(count)
    module = tf.function(ObjectRelation(num_heads=HEADS))
    whole = tf.function(ObjectRelation(num_heads=HEADS, query_chunk_size=None))
    run = lambda layer: lambda: layer(features, boxes).numpy()
    module_ms = median_ms(run(module), repeats)
    plain = RelationBoxHead(num_classes=CLASSES, use_relation=False)
    relation = RelationBoxHead(num_classes=CLASSES)
    plain_fwd, plain_train = head_times(plain, crops, boxes, repeats)
    relation_fwd, relation_train = head_times(relation, crops, boxes, repeats)
    return {
        "module ms": module_ms,
        "peak MiB": peak_memory_mb(run(module)),
        "peak unchunked": peak_memory_mb(run(whole)),
        "2fc ms": plain_fwd,
        "2fc+RM ms": relation_fwd,
        "fwd ratio": relation_fwd / plain_fwd,
        "2fc train": plain_train,
        "2fc+RM train": relation_train,
        "train ratio": relation_train / plain_train,
        "MAC ratio": 1 + 2 * relation_macs(count) / head_macs(count),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 64, 128; 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    counts, repeats = ((64, 128), 2) if args.quick else ((300, 512, 1000), args.repeats)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; one image, D = {WIDTH}, "
          f"{HEADS} heads, RoI crops {CROP}, {CLASSES} classes; median of {repeats} (ms); "
          f"peak = allocator peak of one module forward (MiB), query chunks of 256.")
    rows = {count: module_row(count, repeats) for count in counts}
    columns = list(next(iter(rows.values())))
    print(f"{'N':>5}" + "".join(f"{name:>15}" for name in columns))
    for count, row in rows.items():
        print(f"{count:>5}" + "".join(
            f"{value:>14.2f}x" if "ratio" in name else f"{value:>15.1f}"
            for name, value in row.items()))
    print("fwd/train ratio = 2fc+RM head time / 2fc head time (forward / forward+backward); "
          "MAC ratio = the same for multiply-adds.")


if __name__ == "__main__":
    main()
