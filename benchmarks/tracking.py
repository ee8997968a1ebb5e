"""Tracking: per-frame latency of the learned tracker and the baselines.

At 10, 50 and 200 objects per frame (generated scenes whose area grows with
the count, so density stays the same; every tracker sees the same
detections): the median time of one `update` (scoring, Hungarian,
bookkeeping) of RelationTracker (one network call per frame), IoU +
Hungarian and Kalman + IoU, in interleaved rounds of one run, and the
learned tracker's time as a ratio of the IoU tracker's. The accuracy
comparison (IDF1, MOTA, ID switches) is the tracking example:
`examples/track_generated.py`.

Run: `.venv/bin/python benchmarks/tracking.py [--quick] [--model similarity.keras]`.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from keras_relnet.tracking import (  # noqa: E402
    IoUTracker,
    KalmanIoUTracker,
    RelationTracker,
    generate_sequence,
)
from keras_relnet.tracking.experiment import train_similarity_network  # noqa: E402
from keras_relnet.tracking.synthetic import DetectorModel, frame_detections  # noqa: E402

COUNTS = (10, 50, 200)


def scene(count, frames, seed=0):
    """A generated sequence with about `count` objects in every frame."""
    side = np.sqrt(count / 10.0)
    return generate_sequence(seed, frames=frames, objects=count,
                             image_size=(int(640 * side), int(480 * side)),
                             detector=DetectorModel(false_positives=0.05 * count))


def frame_times(tracker, sequence, warmup):
    """Milliseconds of each `update` after the first `warmup` frames, and the
    tracklets alive before each."""
    tracker.reset()
    times, tracklets = [], []
    for frame in range(1, sequence.frames + 1):
        detections, features = frame_detections(sequence, frame)
        alive = len(tracker.tracks)
        start = time.perf_counter()
        tracker.update(detections, features=features)
        if frame > warmup:
            times.append(1e3 * (time.perf_counter() - start))
            tracklets.append(alive)
    return times, tracklets


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and rounds")
    parser.add_argument("--model", help="a trained similarity network (.keras); default: "
                                        "one trained here for a minute (an untrained one "
                                        "matches nothing, so its tracklets pile up)")
    args = parser.parse_args()
    model = args.model or train_similarity_network(
        [generate_sequence(seed) for seed in range(8)], epochs=6, verbose=0)[0]
    trackers = {"relation": RelationTracker(model), "iou": IoUTracker(),
                "kalman_iou": KalmanIoUTracker()}
    frames, rounds = (25, 2) if args.quick else (60, 3)
    print("| objects | detections / frame | tracklets / frame | relation ms | IoU ms | "
          "Kalman + IoU ms | relation / IoU |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for count in COUNTS:
        sequence = scene(count, frames)
        times = {name: [] for name in trackers}
        for _ in range(rounds):  # interleaved: the machine's noise hits every tracker alike
            for name, tracker in trackers.items():
                spent, tracklets = frame_times(tracker, sequence, warmup=12)
                times[name] += spent
                if name == "relation":
                    alive = float(np.mean(tracklets))
        median = {name: float(np.median(values)) for name, values in times.items()}
        per_frame = len(sequence.detections) / sequence.frames
        print(f"| {count} | {per_frame:.0f} | {alive:.0f} | {median['relation']:.2f} | "
              f"{median['iou']:.2f} | {median['kalman_iou']:.2f} | "
              f"{median['relation'] / median['iou']:.1f}x |")
        rows.append((count, median))
    return rows


if __name__ == "__main__":
    main()
