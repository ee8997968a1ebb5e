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


def compiled_model(builder, batch, size, jit_compile):
    model = builder(input_shape=(size, size, 3), classes=1000)
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy",
                  jit_compile=jit_compile)
    return model


def interleaved_step_ms(models, images, labels, rounds):
    """Step times `{name: [ms per round]}`, one step of every model per round.

    On a shared machine speed drifts by several percent over a minute, so
    models are never timed one after another: each round times every model
    once, in an order that reverses every round (ABBA), and ratios are taken
    within a round.
    """
    for model in models.values():
        model.train_on_batch(images, labels)  # trace
    times = {name: [] for name in models}
    for round_index in range(rounds):
        names = list(models)[::-1] if round_index % 2 else list(models)
        for name in names:
            start = time.perf_counter()
            models[name].train_on_batch(images, labels)
            times[name].append(1e3 * (time.perf_counter() - start))
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="112 x 112, batch 2")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jit-compile", action="store_true",
                        help="XLA-compile the train step (what Keras does on GPU)")
    args = parser.parse_args()
    batch, size = (2, 112) if args.quick else (8, 224)
    rounds = 2 if args.quick else args.rounds
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores; batch {batch}, "
          f"{size}x{size}; train step = forward + backward + SGD; {rounds} interleaved "
          f"rounds, median step and median (quartiles) of per-round ratios; "
          f"jit_compile={args.jit_compile}.")
    models = {name: compiled_model(builder, batch, size, args.jit_compile)
              for name, builder in MODELS.items()}
    images = np.random.default_rng(0).normal(size=(batch, size, size, 3)).astype("float32")
    labels = np.arange(batch) % 1000
    step_ms = {name: np.asarray(values)
               for name, values in interleaved_step_ms(models, images, labels, rounds).items()}
    print(f"{'model':<26}{'parameters':>13}{'step ms':>10}{'vs ResNet-50':>14}"
          f"{'quartiles':>16}")
    for name, model in models.items():
        ratios = step_ms[name] / step_ms["ResNet-50"]
        low, median, high = np.percentile(ratios, [25, 50, 75])
        print(f"{name:<26}{model.count_params():>13,}{np.median(step_ms[name]):>10.0f}"
              f"{median:>13.3f}x{low:>9.3f}-{high:.3f}")


if __name__ == "__main__":
    main()
