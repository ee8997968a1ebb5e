"""The tracking example end to end, small: train, compare, export, draw."""

import sys

import numpy as np
import pytest

sys.path.insert(0, "examples")
import track_generated  # noqa: E402

SMALL = ["--epochs", "10", "--repeats", "2", "--train-sequences", "16",
         "--held-out-sequences", "6"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("tracking")
    return track_generated.main(SMALL + ["--output-dir", str(output)]), output


def test_the_learned_tracker_beats_both_baselines_on_held_out_sequences(small_run):
    table, _ = small_run
    idf1 = table["idf1"]
    # The acceptance direction: 5 IDF1 points above IoU + Hungarian, and above
    # the Kalman + IoU tracker, on the same detections.
    assert idf1[("generated", "relation")] >= idf1[("generated", "iou")] + 0.05
    assert idf1[("generated", "relation")] > idf1[("generated", "kalman_iou")]
    assert table.loc[("generated", "relation"), "num_switches"] < table.loc[
        ("generated", "iou"), "num_switches"]
    for dataset in ("generated", "TUD-Campus"):
        assert np.isfinite(table.loc[dataset, "mota"]).all()


def test_the_example_exports_draws_and_writes_mot_files(small_run):
    from keras_relnet.tracking import read_mot

    _, output = small_run
    for name in ("similarity.keras", "similarity.tflite", "similarity.onnx", "tracks.png",
                 "similarity.png", "comparison.csv"):
        assert (output / name).stat().st_size > 0, name
    tracks = read_mot(output / "generated-1000.txt")
    assert len(tracks) > 100 and tracks.ids.min() >= 1
