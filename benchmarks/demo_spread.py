"""The spread of the digits demo over seeds, CPU levels and the reference path.

Runs `examples/train_digits.py` (without its broken-export checks) once per
seed on every kernel CPU level this machine runs (`KERAS_RELNET_CPU_LEVEL`)
and with `--implementation reference`, and prints min / median / max of each
number the demo checks, against the demo's criteria, with the margin of the
worst run. The demo's criteria (`examples/digits_checks.py`) are chosen from
this table (docs/benchmarks.md).

Each run appends one JSON line to `--results`, and a rerun skips the runs
already there, so an interrupted spread resumes. `--shard K/N` runs every
N-th run only, into its own file beside `--results`: N shards in parallel
finish sooner on a small model that two threads barely speed up (a run's
numbers do not change: the thread count each process uses does not), and the
table reads every shard's file.

`--table-only` prints the table of what is recorded. `--one-epoch` instead trains one epoch of seed 0 per configuration and prints
how far the weights of each are from the best level's: what the levels and
the reference path differ by (rounding only, not a different training).

Run: `.venv/bin/python benchmarks/demo_spread.py` (about 90 s a run).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import digits_checks  # noqa: E402

from keras_relnet.ops.local_relation.builder import supported_levels  # noqa: E402


def configurations(reference=True):
    """`(name, environment, demo arguments)` per configuration, best level first."""
    levels = [(level, {"KERAS_RELNET_CPU_LEVEL": level}, []) for level in supported_levels()]
    return levels + ([("reference", {}, ["--implementation", "reference"])] if reference else [])


def run_demo(name, environment, arguments, seed, directory, epochs=None):
    """One demo run in a fresh process; its metrics dict (with "name")."""
    metrics = pathlib.Path(directory) / f"{name}-{seed}.json"
    command = [sys.executable, str(ROOT / "examples/train_digits.py"), "--seed", str(seed),
               "--skip-mutations", "--metrics", str(metrics),
               "--output-dir", str(pathlib.Path(directory) / f"{name}-{seed}"), *arguments]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **environment, "CI": "1"})
    if not metrics.exists():
        raise RuntimeError(f"the demo ({name}, seed {seed}) wrote no metrics:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return {"name": name, **json.loads(metrics.read_text())}


def precision_of(name):
    return "int8" if "int8" in name else "float16" if "float16" in name else "float32"


def reports_of(run):
    """Each artefact's parity report, recomputed from the run's recorded
    outputs with the current `digits_checks`."""
    want, labels = np.asarray(run["keras_outputs"]), np.asarray(run["labels"])
    return {name: digits_checks.parity_report(np.asarray(got), want, labels)
            for name, got in run["artefact_outputs"].items()}


def run_failures(run):
    """The demo's failures of a recorded run under the current criteria."""
    accuracy = digits_checks.accuracy(run["keras_outputs"], run["labels"])
    failures = [] if accuracy >= digits_checks.TARGET_ACCURACY else ["accuracy"]
    for name, report in reports_of(run).items():
        failures += digits_checks.parity_failures(name, precision_of(name), report)
    return failures


def spread_rows(runs):
    """The table's rows: per configuration (and over all runs), each checked
    number's (min, median, max)."""
    def numbers(selected):
        reports = [reports_of(run) for run in selected]
        int8 = [report["lrnet26_digits_int8.tflite"] for report in reports]
        float16 = [report["lrnet26_digits_float16.tflite"] for report in reports]
        float32 = [max(report[name]["max_difference"]
                       for name in ("lrnet26_digits.tflite", "lrnet26_digits.onnx"))
                   for report in reports]
        return {
            "accuracy": [digits_checks.accuracy(run["keras_outputs"], run["labels"])
                         for run in selected],
            "float32 max diff": float32,
            "float16 max diff": [report["max_difference"] for report in float16],
            "float16 clear max diff": [report["clear_max_difference"] for report in float16],
            "float16 mean diff": [report["mean_difference"] for report in float16],
            "float16 clear agreement": [report["clear_agreement"] for report in float16],
            "int8 agreement": [report["agreement"] for report in int8],
            "int8 clear agreement": [report["clear_agreement"] for report in int8],
            "int8 accuracy drop": [report["keras_accuracy"] - report["accuracy"]
                                   for report in int8],
            "int8 mean diff": [report["mean_difference"] for report in int8],
            "clear digits": [report["clear_fraction"] for report in int8],
            "failed runs": [float(bool(run_failures(run))) for run in selected],
        }

    names = list(dict.fromkeys(run["name"] for run in runs))
    groups = [(name, [run for run in runs if run["name"] == name]) for name in names]
    return [(name, len(selected), numbers(selected))
            for name, selected in groups + [("all", runs)]]


# The criterion each number is held to: (bound, True when the bound is a minimum).
CRITERIA = {
    "accuracy": (digits_checks.TARGET_ACCURACY, True),
    "float32 max diff": (digits_checks.FLOAT32_TOLERANCE, False),
    "float16 clear max diff": (digits_checks.FLOAT16_CLEAR_TOLERANCE, False),
    "float16 mean diff": (digits_checks.FLOAT16_MEAN_DIFFERENCE, False),
    "int8 clear agreement": (digits_checks.INT8_CLEAR_AGREEMENT, True),
    "int8 accuracy drop": (digits_checks.INT8_ACCURACY_DROP, False),
    "int8 mean diff": (digits_checks.INT8_MEAN_DIFFERENCE, False),
}


def spread_table(runs):
    """The table's lines as Markdown: a row per checked number, a column per
    configuration (and all runs) with min / median / max, the criterion and
    the worst run over the bound (>= 1 passes a minimum, <= 1 a maximum)."""
    rows = spread_rows(runs)
    lines = ["| number | " + " | ".join(f"{name} ({count} runs)" for name, count, _ in rows)
             + " | criterion | worst / bound |",
             "|---" * (len(rows) + 3) + "|"]
    for number in rows[0][2]:
        cells = [" / ".join(f"{statistic(values[number]):.3g}"
                            for statistic in (np.min, np.median, np.max))
                 for _, _, values in rows]
        criterion = worst = ""
        if number in CRITERIA:
            bound, minimum = CRITERIA[number]
            everything = rows[-1][2][number]
            criterion = f"{'>=' if minimum else '<='} {bound:g}"
            worst = f"{(min(everything) if minimum else max(everything)) / bound:.3f}"
        lines.append(f"| {number} | " + " | ".join(cells) + f" | {criterion} | {worst} |")
    return lines


def print_spread(runs):
    print("\n" + "\n".join(spread_table(runs)))
    print("(each cell: min / median / max over the runs)")


def print_one_epoch(directory):
    """Trains one epoch of seed 0 per configuration; prints the largest weight
    difference of each from the first (the best CPU level)."""
    import keras

    models = {}
    for name, environment, arguments in configurations():
        run_demo(name, environment, arguments, 0, directory, epochs=1)
        models[name] = keras.models.load_model(
            pathlib.Path(directory) / f"{name}-0" / "lrnet26_digits.keras")
    names = list(models)
    print(f"\nafter one epoch of seed 0, against {names[0]}:")
    first = [keras.ops.convert_to_numpy(w) for w in models[names[0]].weights]
    for name in names[1:]:
        other = [keras.ops.convert_to_numpy(w) for w in models[name].weights]
        absolute = max(float(np.abs(a - b).max()) for a, b in zip(first, other))
        relative = max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
                       for a, b in zip(first, other))
        print(f"  {name:12s} max |w - w_{names[0]}| {absolute:.1e} "
              f"(largest per tensor, relative to its largest weight: {relative:.1e})")


def recorded_runs(results):
    """The runs recorded in `results` and in its shards' files."""
    files = [results, *sorted(results.parent.glob(f"{results.stem}.*-of-*{results.suffix}"))]
    runs = {}
    for path in files:
        for line in path.read_text().splitlines() if path.exists() else []:
            run = json.loads(line)
            runs.setdefault((run["name"], run["seed"]), run)  # shards may meet at one run
    return list(runs.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0 .. N-1")
    parser.add_argument("--reference-seeds", type=int, default=None,
                        help="seeds 0 .. N-1 on the reference path (default: --seeds; 0: none)")
    parser.add_argument("--results", default="build/demo_spread.jsonl")
    parser.add_argument("--one-epoch", action="store_true")
    parser.add_argument("--shard", default="0/1", help="K/N: run every N-th run, from the K-th")
    parser.add_argument("--reverse", action="store_true",
                        help="take the shard's runs last seed first (a helper for a slower shard)")
    parser.add_argument("--table-only", action="store_true",
                        help="print the table of the recorded runs; run nothing")
    args = parser.parse_args()
    if args.table_only:
        print_spread(recorded_runs(pathlib.Path(args.results)))
        return 0
    if args.one_epoch:
        with tempfile.TemporaryDirectory() as directory:
            print_one_epoch(directory)
        return 0
    shard, shards = (int(part) for part in args.shard.split("/"))
    results = pathlib.Path(args.results)
    if shards > 1 or args.reverse:
        tail = "-reverse" if args.reverse else ""
        results = results.with_name(f"{results.stem}.{shard}-of-{shards}{tail}{results.suffix}")
    results.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        reference_seeds = args.seeds if args.reference_seeds is None else args.reference_seeds
        planned = [(seed, configuration) for seed in range(args.seeds)
                   for configuration in configurations(seed < reference_seeds)]
        mine = planned[shard::shards]
        for seed, (name, environment, arguments) in mine[::-1] if args.reverse else mine:
            if (name, seed) in {(run["name"], run["seed"])
                                for run in recorded_runs(pathlib.Path(args.results))}:
                continue
            run = run_demo(name, environment, arguments, seed, directory)
            failures = run_failures(run)
            print(f"{name:12s} seed {seed}: accuracy {run['accuracy']:.4f}, "
                  f"{'FAILED ' + '; '.join(failures) if failures else 'ok'}", flush=True)
            with results.open("a") as out:
                out.write(json.dumps(run) + "\n")
    runs = recorded_runs(pathlib.Path(args.results))
    print_spread([run for run in runs if run["seed"] < args.seeds])
    return 0


if __name__ == "__main__":
    sys.exit(main())
