"""Multi-object tracking with a spatial-temporal relation network.

Trains the similarity network on generated sequences (objects that move,
cross and occlude each other, seen by a noisy detector), picks each
tracker's match threshold on validation sequences, then compares the
learned tracker with IoU + Hungarian and a Kalman + IoU tracker on
held-out generated sequences and on TUD-Campus (real pedestrian paths that
motmetrics ships; detections made from them the same way). Saves the model,
exports it to TFLite and ONNX and checks both against Keras, and draws the
tracks and a similarity matrix.

    .venv/bin/python examples/track_generated.py --output-dir runs/tracking
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_relnet.tracking import (  # noqa: E402
    IoUTracker,
    KalmanIoUTracker,
    RelationTracker,
    generate_sequence,
    write_mot,
)
from keras_relnet.tracking.synthetic import frame_detections  # noqa: E402
from keras_relnet.tracking.similarity_network import FRAME_INPUTS  # noqa: E402
from keras_relnet.tracking.experiment import (  # noqa: E402
    choose_match_threshold,
    compare_trackers,
    track_sequence,
    train_similarity_network,
    tud_campus_sequence,
)

TRAIN_SEEDS = range(0, 24)
VALIDATION_SEEDS = range(500, 504)
HELD_OUT_SEEDS = range(1000, 1008)
TUD_CAMPUS_SEEDS = range(2000, 2004)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/tracking")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="samples per training frame")
    parser.add_argument("--train-sequences", type=int, default=len(TRAIN_SEEDS))
    parser.add_argument("--held-out-sequences", type=int, default=len(HELD_OUT_SEEDS))
    parser.add_argument("--seed", type=int, default=0, help="weights and augmentations")
    parser.add_argument("--history", type=int, default=16, help="past frames per tracklet")
    parser.add_argument("--max-age", type=int, default=12,
                        help="missed frames a tracklet survives (every tracker)")
    parser.add_argument("--skip-export", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    """Runs the example; returns the comparison table (a DataFrame)."""
    args = parse_args(argv)
    output = pathlib.Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    train = [generate_sequence(seed) for seed in TRAIN_SEEDS[:args.train_sequences]]
    started = time.perf_counter()
    model, _ = train_similarity_network(train, epochs=args.epochs, repeats=args.repeats,
                                        seed=args.seed, history=args.history)
    print(f"trained in {time.perf_counter() - started:.0f} s")
    model.save(output / "similarity.keras")
    datasets = {
        "generated": [generate_sequence(seed)
                      for seed in HELD_OUT_SEEDS[:args.held_out_sequences]],
        "TUD-Campus": [tud_campus_sequence(seed) for seed in TUD_CAMPUS_SEEDS],
    }
    validation = [generate_sequence(seed) for seed in VALIDATION_SEEDS]
    makers = {"relation": lambda threshold: RelationTracker(model, threshold, args.max_age),
              "iou": lambda threshold: IoUTracker(threshold, args.max_age),
              "kalman_iou": lambda threshold: KalmanIoUTracker(threshold, args.max_age)}
    trackers = {}
    for name, make in makers.items():  # every tracker's threshold, on the same validation data
        threshold, scores = choose_match_threshold(make, validation)
        print(f"{name}: match threshold {threshold} (validation IDF1 "
              + ", ".join(f"{t}: {100 * idf1:.1f}" for t, idf1 in scores.items()) + ")")
        trackers[name] = make(threshold)
    table = compare_trackers(trackers, datasets)
    print(format_comparison(table))
    table.to_csv(output / "comparison.csv")
    _draw(trackers["relation"], datasets["generated"][0], output)
    if not args.skip_export:
        _export_and_check(model, datasets["generated"][0], output)
    return table


def format_comparison(table):
    """The comparison as a Markdown table (percentages)."""
    lines = ["| data | tracker | IDF1 | MOTA | ID switches | MOTP |", "|---|---|---|---|---|---|"]
    for (dataset, tracker), row in table.iterrows():
        lines.append(f"| {dataset} | {tracker} | {100 * row['idf1']:.1f} | "
                     f"{100 * row['mota']:.1f} | {int(row['num_switches'])} | "
                     f"{100 * row['motp']:.1f} |")
    return "\n".join(lines)


def _draw(tracker, sequence, output):
    from keras_relnet.visualize import plot_similarity, plot_tracks

    tracks = track_sequence(tracker, sequence)
    write_mot(output / "generated-1000.txt", tracks)
    middle = sequence.frames // 2
    plot_tracks(tracks, middle, output / "tracks.png", image_size=sequence.image_size)
    boxes, features = _tracked_until(tracker, sequence, middle)
    similarity = tracker.frame_similarity(boxes, features)
    plot_similarity(similarity, output / "similarity.png",
                    track_ids=[track.identity for track in tracker.tracks])


def _tracked_until(tracker, sequence, frame):
    """Tracks the frames before `frame`; returns that frame's detections and features."""
    tracker.reset()
    for current in range(1, frame + 1):
        detections, features = frame_detections(sequence, current)
        if current == frame:
            return detections, features
        tracker.update(detections, features=features)


def _export_and_check(model, sequence, output):
    from keras_relnet.export import export
    from keras_relnet.export.runtimes import run_exported

    tracker = RelationTracker(model)
    inputs = tracker.network_inputs(*_tracked_until(tracker, sequence, sequence.frames // 2))
    inputs = {name: np.asarray(value) for name, value in inputs.items()}
    want = [np.asarray(value) for value in model([inputs[name] for name in FRAME_INPUTS])]
    for suffix in (".tflite", ".onnx"):
        path = export(model, output / f"similarity{suffix}", overwrite=True)
        got = run_exported(path, inputs)
        error = max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(got, want))
        print(f"{path}: largest difference from Keras {error:.2e}")
        if error > 1e-4:
            raise SystemExit(f"{path} differs from the Keras model by {error}")


if __name__ == "__main__":
    main()
    sys.exit(0)
