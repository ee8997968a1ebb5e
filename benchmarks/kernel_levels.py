"""The portable CPU kernel against the `-march=native` one, at the LR-Net-50 shapes.

A wheel carries one library per portable CPU level and the loader picks the
best this CPU runs; this compiles that level and a "native" library (tuned
for this machine) from the same sources, then times the compiled kernel's
forward and forward+backward (batch 8, 7x7 window, m = 8) with each. The two
libraries register the same ops, so each runs in its own worker process;
the rounds are interleaved (every round asks both workers, in alternating
order) so that the machine's noise falls on both alike. Before timing, the
workers' outputs on the same inputs are compared.

Run: `.venv/bin/python benchmarks/kernel_levels.py [--quick] [--levels all]`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH, KERNEL, GROUP_SIZE = 8, 7, 8
STAGE_SHAPES = [(56, 104), (28, 200), (14, 400), (7, 800)]  # LR-Net-50 res2-res5


def worker():
    """Serves timing requests ("<shape index> <fwd|fwdbwd> <repeats>") on stdin."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from keras_relnet import ops
    from keras_relnet.ops.local_relation import kernel
    from timing import median_ms

    def inputs(size, channels):
        groups = channels // GROUP_SIZE
        rng = np.random.default_rng(0)
        shapes = [(BATCH, size, size, groups), (BATCH, size, size, groups),
                  (BATCH, size, size, channels), (groups, KERNEL, KERNEL)]
        return [tf.constant(rng.normal(size=s), tf.float32) for s in shapes]

    relation = lambda *a: ops.local_relation_aggregation(*a, implementation="custom")

    @tf.function
    def forward_backward(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = tf.reduce_sum(tf.square(relation(*args)))
        return tape.gradient(loss, args)

    forward = tf.function(relation)
    cases = [inputs(*shape) for shape in STAGE_SHAPES]
    outputs = [forward(*case).numpy() for case in cases]
    np.save(os.environ["KERAS_RELNET_BENCHMARK_OUTPUT"], np.concatenate(
        [o.ravel() for o in outputs]))
    print(json.dumps(str(kernel.loaded_library().path)), flush=True)
    for line in sys.stdin:
        index, mode, repeats = line.split()
        case = cases[int(index)]
        step = ((lambda: forward(*case).numpy()) if mode == "fwd" else
                (lambda: [g.numpy() for g in forward_backward(*case)]))
        print(json.dumps(median_ms(step, int(repeats))), flush=True)


class Worker:
    """A process that loads one kernel library and answers timing requests."""

    def __init__(self, library, scratch):
        self.output = pathlib.Path(scratch) / f"{pathlib.Path(library).stem}.npy"
        env = {**os.environ, "KERAS_RELNET_KERNEL_LIBRARY": str(library),
               "KERAS_RELNET_BENCHMARK_OUTPUT": str(self.output),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT)])}
        self.process = subprocess.Popen([sys.executable, __file__, "--worker"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        self.library = json.loads(self.process.stdout.readline())  # once it has loaded

    def median_ms(self, index, mode, repeats):
        self.process.stdin.write(f"{index} {mode} {repeats}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait()


def build_libraries(directory, levels):
    """Compiles `levels` and "native" (CPU kernels only) into `directory`."""
    sys.path.insert(0, str(ROOT / "keras_relnet" / "ops" / "local_relation"))
    import builder

    os.environ["KERAS_RELNET_CUDA"] = "0"
    info = builder.build(directory, [*levels, builder.NATIVE], quiet=True)
    return {level: pathlib.Path(directory) / entry["file"]
            for level, entry in info["libraries"].items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds and repeats")
    parser.add_argument("--levels", default="this",
                        help='"this" (the level the loader picks here) or "all" portable levels')
    parser.add_argument("--build-dir", help="where to compile (default: a temporary directory)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker()
    sys.path.insert(0, str(ROOT / "keras_relnet" / "ops" / "local_relation"))
    import builder

    levels = builder.parse_levels(args.levels)
    rounds, repeats = (2, 3) if args.quick else (5, 10)
    with tempfile.TemporaryDirectory(prefix="keras-relnet-levels-") as scratch:
        libraries = build_libraries(args.build_dir or scratch, levels)
        workers = {level: Worker(path, scratch) for level, path in libraries.items()}
        try:
            import numpy as np

            native = np.load(workers[builder.NATIVE].output)
            agreement = {level: float(np.abs(np.load(w.output) - native).max())
                         for level, w in workers.items()}
            times = {(level, i, mode): [] for level in workers
                     for i in range(len(STAGE_SHAPES)) for mode in ("fwd", "fwdbwd")}
            order = list(workers)
            for round_index in range(rounds):
                for i in range(len(STAGE_SHAPES)):
                    for mode in ("fwd", "fwdbwd"):
                        for level in (order if round_index % 2 == 0 else order[::-1]):
                            times[level, i, mode].append(
                                workers[level].median_ms(i, mode, repeats))
        finally:
            for w in workers.values():
                w.close()
    median = {key: float(np.median(value)) for key, value in times.items()}
    print(f"Compiled kernel, portable levels against -march=native, batch {BATCH}, "
          f"{KERNEL}x{KERNEL}, m = {GROUP_SIZE}; {rounds} interleaved rounds of {repeats}")
    print("largest output difference to native: "
          + ", ".join(f"{level} {value:.1e}" for level, value in agreement.items()))
    print("| shape | level | fwd ms | fwd / native | fwd+bwd ms | fwd+bwd / native |")
    print("|---|---|---|---|---|---|")
    chosen, worst = builder.supported_levels()[0], 0.0  # the level the loader picks here
    for i, (size, channels) in enumerate(STAGE_SHAPES):
        for level in [*levels, builder.NATIVE]:
            ratios = [median[level, i, mode] / median[builder.NATIVE, i, mode]
                      for mode in ("fwd", "fwdbwd")]
            if level == chosen:
                worst = max(worst, *ratios)
            print(f"| {size}x{size}x{channels} | {level} | {median[level, i, 'fwd']:.2f} | "
                  f"{ratios[0]:.2f}x | {median[level, i, 'fwdbwd']:.2f} | {ratios[1]:.2f}x |")
    print(f"the level loaded on this CPU, {chosen}: worst ratio to native {worst:.2f}x")


if __name__ == "__main__":
    main()
