"""Context blocks: training-step time of ResNet-50 with GC, SE and NL blocks.

One forward+backward+SGD step at batch 8, 224 x 224, for ResNet-50 and the
GC-ResNet-50 (r16, c3-c5), SE-ResNet-50 (r16, c2-c5) and NL-ResNet-50 (one
NL in c4) presets, measured in one run; ratios are against ResNet-50 (the GC
block's target: <= 1.05x).

Run: `make bench` or `.venv/bin/python benchmarks/context_blocks.py [--quick]`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_relnet.applications import GCResNet50, NLResNet50, ResNet50, SEResNet50  # noqa: E402

MODELS = {"ResNet-50": ResNet50, "GC-ResNet-50 (r16)": GCResNet50,
          "SE-ResNet-50 (r16)": SEResNet50, "NL-ResNet-50 (+1 NL c4)": NLResNet50}


def step_ms(builder, batch, size, repeats, jit_compile):
    model = builder(input_shape=(size, size, 3), classes=1000)
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy",
                  jit_compile=jit_compile)
    images = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    labels = np.arange(batch) % 1000
    model.train_on_batch(images, labels)  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(images, labels)
        times.append(time.perf_counter() - start)
    return model.count_params(), 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="112 x 112, batch 2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the train step (what Keras does on GPU)")
    args = parser.parse_args()
    batch, size = (2, 112) if args.quick else (8, 224)
    repeats = 2 if args.quick else args.repeats
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; batch {batch}, "
          f"{size}x{size}; train step = forward + backward + SGD, median of {repeats}; "
          f"jit_compile={args.jit_compile}.")
    rows = {name: step_ms(builder, batch, size, repeats, args.jit_compile)
            for name, builder in MODELS.items()}
    base_params, base_ms = rows["ResNet-50"]
    print(f"{'model':<26}{'parameters':>13}{'step ms':>10}{'vs ResNet-50':>14}")
    for name, (params, ms) in rows.items():
        print(f"{name:<26}{params:>13,}{ms:>10.0f}{ms / base_ms:>13.3f}x")


if __name__ == "__main__":
    main()
