"""The trackers, the assignment, MOTChallenge files, the generated data,
the sampler and the evaluation."""

import itertools
import re

import numpy as np
import pytest

from keras_relnet.tracking import (
    IoUTracker,
    KalmanIoUTracker,
    MotTable,
    RelationTracker,
    evaluate,
    frame_samples,
    generate_sequence,
    read_mot,
    similarity_network,
    write_mot,
)
from keras_relnet.tracking.assignment import assign, box_iou
from keras_relnet.tracking.experiment import tud_campus_ground_truth
from keras_relnet.tracking.online_tracker import OnlineTracker
from keras_relnet.tracking.pair_sampler import NO_AUGMENTATION
from keras_relnet.tracking.synthetic import DetectorModel, hidden_fractions


def brute_force_assignment(similarity, threshold):
    """The best one-to-one matching by enumeration, then the threshold."""
    rows, columns = similarity.shape
    best, best_pairs = -np.inf, []
    for chosen in itertools.permutations(range(max(rows, columns)), rows):
        pairs = [(r, c) for r, c in enumerate(chosen) if c < columns]
        total = sum(similarity[r, c] for r, c in pairs)
        if total > best + 1e-12:
            best, best_pairs = total, pairs
    return [(r, c) for r, c in best_pairs if similarity[r, c] >= threshold]


@pytest.mark.parametrize("shape, seed", [((3, 3), 0), ((2, 4), 1), ((4, 2), 2), ((5, 5), 3)])
def test_assignment_is_the_best_matching_above_the_threshold(shape, seed):
    similarity = np.random.default_rng(seed).uniform(size=shape)
    rows, columns = assign(similarity, 0.4)
    assert list(zip(rows.tolist(), columns.tolist())) == brute_force_assignment(similarity, 0.4)


def test_assignment_on_hand_made_frames():
    # Greedy would take (0, 0) = 0.9 and leave 1 with 0.1; the Hungarian
    # matching swaps them for a larger total.
    rows, columns = assign(np.array([[0.9, 0.8], [0.85, 0.1]]), 0.5)
    assert (rows.tolist(), columns.tolist()) == ([0, 1], [1, 0])
    rows, columns = assign(np.array([[0.9, 0.2], [0.3, 0.45]]), 0.5)  # 1 stays unmatched
    assert (rows.tolist(), columns.tolist()) == ([0], [0])
    rows, columns = assign(np.array([[np.nan, 0.7]]), 0.5)  # NaN counts as 0
    assert (rows.tolist(), columns.tolist()) == ([0], [1])
    assert [a.size for a in assign(np.zeros((0, 3)), 0.5)] == [0, 0]
    with pytest.raises(ValueError, match="`similarity` must be a"):
        assign(np.zeros(3), 0.5)


def test_box_iou_equals_the_pairwise_iou_op():
    from keras_relnet.ops.duplicate_removal import pairwise_iou

    rng = np.random.default_rng(4)
    corners = rng.uniform(0, 50, size=(2, 7, 2))
    first = np.concatenate([corners[0], corners[0] + rng.uniform(0, 20, (7, 2))], 1)
    second = np.concatenate([corners[1], corners[1] + rng.uniform(0, 20, (7, 2))], 1)
    first[3, 2:] = first[3, :2]  # an empty box
    np.testing.assert_allclose(box_iou(first, second), pairwise_iou(first, second).numpy(),
                               atol=1e-12)


def test_box_iou_matches_a_hand_computation():
    iou = box_iou(np.array([[0.0, 0, 10, 10], [0, 0, 0, 0]]),
                  np.array([[5.0, 5, 15, 15], [0, 0, 10, 10], [np.nan, 0, 1, 1]]))
    np.testing.assert_allclose(iou, [[25 / 175, 1, 0], [0, 0, 0]])


class ScriptedTracker(OnlineTracker):
    """Similarities from a script: checks the shared loop on hand-made frames."""

    def __init__(self, script, **kwargs):
        super().__init__(0.5, **kwargs)
        self.script = iter(script)

    def similarities(self, boxes, detection_state):
        return next(self.script)


def test_the_online_loop_on_hand_made_frames():
    box, other = [0, 0, 10, 20], [20, 0, 10, 20]
    tracker = ScriptedTracker([np.array([[0.9, 0.6]]),    # frame 2: 1 -> det 0, det 1 born
                               np.array([[0.2], [0.8]]),   # frame 3: 2 -> det 0, 1 missed
                               np.array([[0.9], [0.1]]),   # frame 5: 1 is back
                               np.array([[0.1], [0.1]])],  # frame 6: no match
                              max_age=2, birth_score=0.5)
    assert tracker.update([box]).ids.tolist() == [1]
    frame = tracker.update([box, other])
    assert frame.ids.tolist() == [1, 2] and frame.detection_indices.tolist() == [0, 1]
    frame = tracker.update([other])
    assert frame.ids.tolist() == [2] and [t.misses for t in tracker.tracks] == [1, 0]
    assert tracker.update(np.zeros((0, 4))).ids.size == 0  # an empty frame: all missed
    assert [t.misses for t in tracker.tracks] == [2, 1]
    assert tracker.update([box]).ids.tolist() == [1]  # 2 missed frames: still alive
    # A low-score unmatched detection starts nothing; tracklet 2 ends after 3 misses.
    assert tracker.update([[50, 50, 5, 5, 0.1]]).ids.size == 0
    assert [t.identity for t in tracker.tracks] == [1]
    tracker.reset()
    assert tracker.tracks == [] and tracker.update([box]).ids.tolist() == [1]


def test_birth_score_and_death_after_max_age():
    tracker = IoUTracker(max_age=2, birth_score=0.5)
    assert tracker.update([[0, 0, 10, 10, 0.4]]).ids.size == 0
    assert tracker.update([[0, 0, 10, 10, 0.6]]).ids.tolist() == [1]
    for _ in range(2):
        tracker.update(np.zeros((0, 5)))
    assert len(tracker.tracks) == 1
    tracker.update(np.zeros((0, 5)))
    assert tracker.tracks == []
    assert tracker.update([[0, 0, 10, 10]]).ids.tolist() == [2]


def small_network(history=4):
    return similarity_network(feature_dim=8, history=history, num_heads=2, relation_dim=8,
                              cosine_dim=8, geometry_units=4, hidden_units=(8,))


def trackers():
    return {"relation": lambda: RelationTracker(small_network(), max_age=3),
            "iou": IoUTracker, "kalman": KalmanIoUTracker}


@pytest.mark.parametrize("name", ["relation", "iou", "kalman"])
def test_trackers_survive_empty_single_identical_and_nan_frames(name):
    tracker = trackers()[name]()
    features = lambda count: np.random.default_rng(count).normal(size=(count, 8))
    frames = [np.zeros((0, 4)), [[10, 10, 20, 40]], [[10, 10, 20, 40]] * 3,
              [[np.nan, 10, 20, 40], [12, 10, 20, 40]], np.zeros((0, 5)),
              [[np.inf, 0, 1, 1], [0, 0, 0, 5]], [[11, 10, 20, 40]]]
    reported = []
    for boxes in frames:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        out = tracker.update(boxes, features=features(len(boxes)))
        assert len(set(out.ids.tolist())) == len(out.ids)  # one detection per id
        assert np.isfinite(out.boxes).all()
        reported.append(out)
    assert reported[0].ids.size == 0 and reported[1].ids.tolist() == [1]
    assert len(reported[2].ids) == 3  # identical boxes: one match, two births
    assert reported[3].detection_indices.tolist() == [1]  # the NaN box is ignored
    assert reported[5].ids.size == 0  # a non-finite and an empty box: nothing


@pytest.mark.parametrize("name", ["relation", "iou", "kalman"])
def test_trackers_are_deterministic(name):
    sequence = generate_sequence(3, frames=25, objects=4, detector=DetectorModel(feature_dim=8))
    runs = []
    for _ in range(2):
        tracker = trackers()[name]() if name != "relation" else RelationTracker(
            network, max_age=3)
        runs.append(_track(tracker, sequence))
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)


network = small_network()


def _track(tracker, sequence):
    tracker.reset()
    ids = []
    for frame in range(1, sequence.frames + 1):
        rows = sequence.detections.frame(frame)
        ids.append(tracker.update(sequence.detections.boxes[rows],
                                  features=sequence.features[rows]).ids)
    return ids


def test_relation_tracker_calls_the_network_once_per_frame():
    tracker = RelationTracker(small_network(), max_age=3)
    calls = []
    original = tracker._call
    tracker._call = lambda *inputs: calls.append(inputs[3].shape) or original(*inputs)
    tracker.update([[0, 0, 10, 20], [30, 0, 10, 20]], features=np.ones((2, 8)))
    tracker.update([[1, 0, 10, 20], [31, 0, 10, 20], [60, 0, 10, 20]], features=np.ones((3, 8)))
    tracker.update(np.zeros((0, 4)), features=np.zeros((0, 8)))
    assert [tuple(shape) for shape in calls] == [(1, 0, 4, 4), (1, 2, 4, 4)]


def test_relation_tracker_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="`max_age` must be below the model's history"):
        RelationTracker(small_network(history=4), max_age=4)
    tracker = RelationTracker(small_network(), max_age=3)
    with pytest.raises(ValueError, match=r"`features` must be \[detections, 8\]"):
        tracker.update([[0, 0, 10, 20]], features=np.ones((1, 5)))
    with pytest.raises(ValueError, match="`update` needs `features`"):
        tracker.update([[0, 0, 10, 20]])
    with pytest.raises(ValueError, match=r"`detections` must be \[N, 4\]"):
        tracker.update(np.ones((2, 3)), features=np.ones((2, 8)))
    # Once an AttributeError, and a complaint about a max_age never passed.
    with pytest.raises(ValueError, match="`model` must be a similarity network .* received "
                                         "NoneType"):
        RelationTracker(None)
    with pytest.raises(ValueError, match="`model` must have a history of at least 2 frames.* "
                                         "this one has 1"):
        RelationTracker(small_network(history=1))


def test_relation_tracker_computes_features_from_the_image():
    from keras_relnet.tracking.appearance import thumbnail_features

    image = np.random.default_rng(0).uniform(size=(40, 60, 3)).astype("float32")
    model = similarity_network(feature_dim=12, history=3, num_heads=2)
    appearance = lambda frame, boxes: thumbnail_features(frame, boxes, size=(2, 2))
    tracker = RelationTracker(model, max_age=2, appearance=appearance)
    assert tracker.update([[0, 0, 10, 20], [30, 5, 10, 20]], image=image).ids.tolist() == [1, 2]
    features = thumbnail_features(image, np.array([[0, 0, 10, 20]]), size=(2, 2))
    assert features.shape == (1, 12)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)


def test_mot_files_round_trip(tmp_path):
    table = MotTable.from_rows([2, 1, 1], [5, 3, 4], [[1, 2, 3, 4], [5.5, 6, 7, 8], [0, 0, 1, 1]],
                               [0.5, 1, 0.25])
    assert table.frames.tolist() == [1, 1, 2] and table.ids.tolist() == [3, 4, 5]
    read = read_mot(write_mot(tmp_path / "out" / "seq.txt", table))
    for got, want in zip(read, table):
        np.testing.assert_allclose(got, want)
    (tmp_path / "bad.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: a MOTChallenge line needs at least 6"):
        read_mot(tmp_path / "bad.txt")


def test_tud_campus_gives_the_golden_values_of_motmetrics():
    import pathlib

    import motmetrics

    folder = pathlib.Path(motmetrics.__file__).parent / "data" / "TUD-Campus"
    metrics = evaluate([(read_mot(folder / "gt.txt"), read_mot(folder / "test.txt"))])
    assert round(100 * metrics.loc["OVERALL", "mota"], 1) == 52.6
    assert round(100 * metrics.loc["OVERALL", "idf1"], 1) == 55.8
    truth = tud_campus_ground_truth()
    assert np.unique(truth.ids).size == 8 and truth.frames.max() == 71


def test_evaluation_counts_a_swap():
    truth = MotTable.from_rows([1, 1, 2, 2], [1, 2, 1, 2], [[0, 0, 10, 10], [50, 0, 10, 10]] * 2)
    swapped = MotTable.from_rows([1, 1, 2, 2], [7, 8, 8, 7], [[0, 0, 10, 10], [50, 0, 10, 10]] * 2)
    metrics = evaluate([(truth, truth), (truth, swapped)], names=["same", "swap"])
    assert metrics.loc["same", "idf1"] == 1.0 and metrics.loc["swap", "num_switches"] == 2
    assert metrics.loc["swap", "mota"] == 0.5


def test_generated_sequences_cross_occlude_and_are_reproducible():
    sequence = generate_sequence(7)
    again = generate_sequence(7)
    np.testing.assert_array_equal(sequence.detections.boxes, again.detections.boxes)
    np.testing.assert_array_equal(sequence.features, again.features)
    truth = sequence.ground_truth
    hidden = np.concatenate([hidden_fractions(truth.boxes[truth.frame(f)])
                             for f in range(1, sequence.frames + 1)])
    assert (hidden >= 0.5).sum() > 10  # objects hide behind others
    assert (sequence.detections.ids == -1).sum() > 10  # false positives
    assert len(sequence.detections) < len(truth) + (sequence.detections.ids == -1).sum()
    # Same-identity features are closer than different-identity ones.
    ids, features = sequence.detections.ids, sequence.features
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same = (ids[:, None] == ids[None]) & (ids[:, None] >= 0)
    np.fill_diagonal(same, False)
    assert cosine[same].mean() > cosine[~same & (ids[:, None] >= 0) & (ids[None] >= 0)].mean() + 0.3


def test_frame_samples_label_every_pair_of_a_frame():
    sequence = generate_sequence(5, frames=15, objects=4)
    samples, labels = frame_samples([sequence], history=4, augmentation=NO_AUGMENTATION)
    # One sample per frame after the first that has a tracklet behind it.
    assert 10 <= labels.shape[0] <= 14 and set(np.unique(labels)) <= {-1.0, 0.0, 1.0}
    # Each tracklet matches at most one detection, each detection one tracklet.
    assert ((labels == 1).sum(2) <= 1).all() and ((labels == 1).sum(1) <= 1).all()
    # Padding is exactly what the masks say.
    detections = samples["detection_mask"]
    tracks = (samples["track_index"] >= 0).any(-1)
    np.testing.assert_array_equal(labels >= 0, tracks[:, :, None] & detections[:, None, :])
    # A tracklet's slots point at real detections of their frames.
    index = samples["track_index"]
    for s, m, t in zip(*np.nonzero(index >= 0)):
        assert samples["history_mask"][s, t, index[s, m, t]]


def test_frame_samples_augment_with_missed_frames_and_short_tracklets():
    sequence = generate_sequence(5, frames=30, objects=5)
    plain, _ = frame_samples([sequence], history=6, augmentation=NO_AUGMENTATION)
    augmented, _ = frame_samples([sequence], history=6)
    observed = lambda s: (s["track_index"] >= 0).sum()
    assert observed(augmented) < 0.9 * observed(plain)
    assert ((augmented["track_index"] >= 0).any(-1) == (plain["track_index"] >= 0).any(-1)).all()
    assert not np.array_equal(augmented["detection_boxes"], plain["detection_boxes"])


def test_track_eval_prints_the_metrics_of_mot_files(tmp_path, capsys):
    import pathlib

    import motmetrics

    from keras_relnet.cli import main

    folder = pathlib.Path(motmetrics.__file__).parent / "data" / "TUD-Campus"
    csv = tmp_path / "metrics.csv"
    assert main(["track-eval", "--ground-truth", str(folder / "gt.txt"), "--hypotheses",
                 str(folder / "test.txt"), "--output", str(csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["sequence", "MOTA", "IDF1", "IDs"]
    assert lines[1].split()[:3] == ["TUD-Campus", "52.6", "55.8"]
    assert "OVERALL" in csv.read_text()
    # The MOTChallenge layout: DIR/<sequence>/gt/gt.txt and <sequence>.txt.
    (tmp_path / "data" / "SEQ-01" / "gt").mkdir(parents=True)
    (tmp_path / "data" / "SEQ-01" / "gt" / "gt.txt").write_text((folder / "gt.txt").read_text())
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "SEQ-01.txt").write_text((folder / "gt.txt").read_text())
    assert main(["track-eval", "--ground-truth-dir", str(tmp_path / "data"),
                 "--hypotheses-dir", str(tmp_path / "results")]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:3] == ["SEQ-01", "100.0", "100.0"]


@pytest.mark.parametrize("arguments, message", [
    (["--ground-truth", "a.txt"], "the same number of times"),
    (["--ground-truth", "missing.txt", "--hypotheses", "missing.txt"], "no such file"),
    (["--ground-truth-dir", "."], "go together"),
    ([], "give --ground-truth"),
])
def test_track_eval_bad_arguments_exit_with_the_message(arguments, message, capsys):
    from keras_relnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["track-eval"] + arguments)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_plots_of_tracks_and_similarity(tmp_path):
    from keras_relnet.visualize import plot_similarity, plot_tracks

    sequence = generate_sequence(2, frames=20, objects=4)
    path = plot_tracks(sequence.ground_truth, 10, tmp_path / "tracks.png",
                       image_size=sequence.image_size)
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels[..., :3].std() > 0.01  # something is drawn
    path = plot_similarity(np.eye(3)[:, :2], tmp_path / "similarity.png", track_ids=[4, 5, 6],
                           matches=([0, 1], [0, 1]))
    assert matplotlib.image.imread(path).shape[0] > 100
    with pytest.raises(ValueError, match="`similarity` must be"):
        plot_similarity(np.ones(3), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="`tracks` must be a MotTable"):
        plot_tracks(np.ones((3, 6)), 1, tmp_path / "bad.png")


def test_the_match_threshold_is_chosen_by_validation_idf1():
    from keras_relnet.tracking.experiment import choose_match_threshold

    sequences = [generate_sequence(9, frames=30, objects=4)]
    best, scores = choose_match_threshold(lambda t: IoUTracker(t), sequences, (0.3, 0.999))
    assert best == 0.3 and scores[0.3] > scores[0.999] + 0.2


def _tud_campus_lines():
    import pathlib

    import motmetrics

    return (pathlib.Path(motmetrics.__file__).parent / "data" / "TUD-Campus" / "gt.txt"
            ).read_text().splitlines()


@pytest.mark.parametrize("repeated", ["hypotheses", "ground-truth"])
def test_track_eval_refuses_a_repeated_frame_and_id_naming_the_file(tmp_path, repeated, capsys):
    # A repeated (frame, id) row once gave IDF1 109.1% (hypotheses) or 1.27.
    from keras_relnet.cli import main

    lines = _tud_campus_lines()
    clean, doubled = tmp_path / "clean.txt", tmp_path / "doubled.txt"
    clean.write_text("\n".join(lines) + "\n")
    doubled.write_text("\n".join(lines + lines[:1]) + "\n")
    files = {"ground-truth": clean, "hypotheses": clean, repeated: doubled}
    frame, identity = (int(float(value)) for value in lines[0].split(",")[:2])
    with pytest.raises(SystemExit) as exit_info:
        main(["track-eval", "--ground-truth", str(files["ground-truth"]),
              "--hypotheses", str(files["hypotheses"])])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"{doubled} has 2 rows with id {identity} in frame {frame}" in error


def test_evaluate_refuses_two_hypotheses_with_one_id_in_a_frame():
    truth = MotTable.from_rows([1, 1], [1, 2], [[0, 0, 10, 10], [50, 0, 10, 10]])
    one_id = MotTable.from_rows([1, 1], [7, 7], [[0, 0, 10, 10], [50, 0, 10, 10]])
    with pytest.raises(ValueError, match=r"the hypotheses of sequence 'cam' has 2 rows with "
                                         r"id 7 in frame 1"):
        evaluate([(truth, one_id)], names=["cam"])
    with pytest.raises(ValueError, match=r"the ground truth of sequence '0' has 2 rows"):
        evaluate([(one_id, truth)])


@pytest.mark.parametrize("arguments, message", [
    (dict(names=["a", "b"]), r"`names` must name each of the 1 sequences"),
    (dict(iou_threshold=2.0), r"`iou_threshold` must be in \(0, 1\]; received 2.0"),
    (dict(iou_threshold=float("nan")), r"`iou_threshold` must be in \(0, 1\]; received nan"),
    (dict(iou_threshold=-1.0), r"`iou_threshold` must be in \(0, 1\]"),
])
def test_evaluate_bad_arguments_raise_value_error(arguments, message):
    truth = MotTable.from_rows([1], [1], [[0, 0, 10, 10]])
    with pytest.raises(ValueError, match=message):
        evaluate([(truth, truth)], **arguments)


def test_evaluate_refuses_an_empty_ground_truth():
    empty = MotTable.from_rows([], [], np.zeros((0, 4)))
    with pytest.raises(ValueError, match=r"sequence '0' has no objects; MOTA and IDF1"):
        evaluate([(empty, MotTable.from_rows([1], [1], [[0, 0, 10, 10]]))])


def test_mot_table_replace_and_the_named_tuple_methods():
    table = MotTable.from_rows([1, 2], [3, 4], [[0, 0, 1, 1], [1, 1, 2, 2]], [0.5, 1.0])
    renamed = table._replace(ids=np.array([8, 9]))
    assert isinstance(renamed, MotTable) and len(renamed) == 2
    assert renamed.ids.tolist() == [8, 9] and renamed.frames.tolist() == [1, 2]
    assert list(table._asdict()) == ["frames", "ids", "boxes", "scores"]
    with pytest.raises(TypeError, match="MotTable takes 4 columns"):
        MotTable._make([table.frames, table.ids])


def test_track_eval_output_in_a_missing_folder_is_refused_before_evaluating(tmp_path, capsys):
    from keras_relnet.cli import main

    truth = tmp_path / "gt.txt"
    truth.write_text("\n".join(_tud_campus_lines()) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["track-eval", "--ground-truth", str(truth), "--hypotheses", str(truth),
              "--output", str(tmp_path / "no" / "such" / "m.csv")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""  # no table printed first
    assert f"the folder {tmp_path / 'no' / 'such'} does not exist" in captured.err


@pytest.mark.parametrize("line, message", [
    ("0,1,10,20,30,40,1", "the frame must be a whole number >= 1 (frames count from 1), not 0"),
    ("1.5,1,10,20,30,40,1", "the frame must be a whole number >= 1"),
    ("1,1.7,10,20,30,40,1", "the id must be a whole number (-1: unknown), not 1.7"),
    ("1,1,nan,20,30,40,1", "the box and score must be finite numbers"),
    ("1,1,10,20,inf,40,1", "the box and score must be finite numbers"),
    ("1,1,10,20,30,40,nan", "the box and score must be finite numbers"),
    ("1,1,10,20,-30,40,1", "the width and height must be >= 0, not -30 and 40"),
])
def test_read_mot_refuses_rows_that_are_no_objects(line, message, tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,2,0,0,5,5,1\n" + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: {message}")):
        read_mot(path)


def test_read_mot_of_a_binary_file_says_it_is_not_text(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_bytes(bytes(range(128, 256)))
    with pytest.raises(ValueError, match="is not a MOTChallenge text file"):
        read_mot(path)


@pytest.mark.parametrize("arguments, message", [
    (dict(frames=1), "`frames` must be >= 2 (objects live for half the sequence or more)"),
    (dict(frames=2.5), "`frames` must be a positive integer; received 2.5"),
    (dict(objects=0), "`objects` must be a positive integer; received 0"),
    (dict(image_size=(640, 200)), "`image_size` must be at least (105, 261) (width, height)"),
    (dict(max_speed=0.0), "`max_speed` must be >= 2; received 0"),
    (dict(max_speed=float("nan")), "`max_speed` must be a finite number"),
])
def test_generate_sequence_bad_arguments_raise_value_error(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_sequence(0, **arguments)
    assert len(generate_sequence(0, frames=2, objects=1).ground_truth) > 0


@pytest.mark.parametrize("arguments, message", [
    (dict(miss_rate=2), "`miss_rate` must be in [0, 1]; received 2"),
    (dict(hidden_fraction=-0.1), "`hidden_fraction` must be in [0, 1]"),
    (dict(appearance_noise=-1), "`appearance_noise` must be >= 0; received -1"),
    (dict(false_positives=float("inf")), "`false_positives` must be a finite number"),
    (dict(feature_dim=0), "`feature_dim` must be a positive integer; received 0"),
    (dict(lookalikes=1.5), "`lookalikes` must be a positive integer; received 1.5"),
])
def test_detector_model_bad_arguments_raise_value_error(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        DetectorModel(**arguments)


def test_train_similarity_network_refuses_no_sequences_and_non_finite_features():
    from keras_relnet.tracking.experiment import train_similarity_network

    with pytest.raises(ValueError, match="`sequences` must hold at least one"):
        train_similarity_network([])
    sequence = generate_sequence(0, frames=10, objects=2)
    sequence.features[3, 1] = np.nan  # once trained silently to loss: nan
    with pytest.raises(ValueError, match=r"`sequences\[0\]` has non-finite features \(1 values"):
        train_similarity_network([sequence], epochs=1)


def test_thumbnail_features_refuse_a_non_finite_box_naming_its_row():
    from keras_relnet.tracking.appearance import thumbnail_features

    boxes = np.array([[0, 0, 10, 10], [1, np.nan, 5, 5]])
    with pytest.raises(ValueError, match=r"`boxes` must be finite .* row 1 is \[1.0, nan"):
        thumbnail_features(np.ones((20, 20, 3)), boxes)


def test_track_eval_names_a_single_gt_file_by_its_folder(tmp_path, capsys, monkeypatch):
    from keras_relnet.cli import main

    (tmp_path / "SEQ-07").mkdir()
    (tmp_path / "SEQ-07" / "gt.txt").write_text("\n".join(_tud_campus_lines()) + "\n")
    monkeypatch.chdir(tmp_path / "SEQ-07")  # "gt.txt" alone once gave a blank name
    assert main(["track-eval", "--ground-truth", "gt.txt", "--hypotheses", "gt.txt"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "SEQ-07"
