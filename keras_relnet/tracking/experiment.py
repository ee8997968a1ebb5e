"""The tracking experiment: train the similarity network on generated
sequences and compare trackers on the same detections."""

import pathlib

import keras
import numpy as np
import pandas as pd

from keras_relnet.tracking.evaluation import evaluate
from keras_relnet.tracking.mot_format import MotTable, read_mot
from keras_relnet.tracking.online_tracker import tracks_to_table
from keras_relnet.tracking.pair_sampler import Augmentation, frame_samples
from keras_relnet.tracking.similarity_network import (
    SimilarityTrainer,
    masked_binary_crossentropy,
    similarity_network,
)
from keras_relnet.tracking.synthetic import (
    DetectorModel,
    TrackingSequence,
    frame_detections,
    noisy_detections,
)

TUD_CAMPUS_SIZE = (640, 480)


def tud_campus_ground_truth():
    """The TUD-Campus pedestrians (71 frames, 8 identities) that motmetrics ships."""
    import motmetrics

    path = pathlib.Path(motmetrics.__file__).parent / "data" / "TUD-Campus" / "gt.txt"
    return read_mot(path)


def tud_campus_sequence(seed, detector=DetectorModel()):
    """TUD-Campus with detections made from its ground truth by `detector`
    (jitter, misses, occlusion misses, false positives and appearance codes)."""
    truth = tud_campus_ground_truth()
    detections, features = noisy_detections(truth, np.random.default_rng(seed),
                                            TUD_CAMPUS_SIZE, detector)
    return TrackingSequence(truth, detections, features, TUD_CAMPUS_SIZE,
                            int(truth.frames.max()))


def train_similarity_network(sequences, epochs=20, repeats=2, batch_size=32,
                             learning_rate=3e-3, seed=0, verbose="auto", **network_options):
    """A similarity network trained with `model.fit` on frame samples.

    Args:
        sequences: training `TrackingSequence`s.
        epochs: passes over the samples.
        repeats: samples per frame (each with new augmentations).
        batch_size: frames per step.
        learning_rate: Adam's step size.
        seed: the seed of the weights, the augmentations and the shuffling.
        verbose: `model.fit`'s (a progress bar by default).
        **network_options: `similarity_network` arguments (`history`, ...).

    Returns:
        `(frame_model, history)`: the trained `similarity_network` and the
        `keras.callbacks.History`.

    Raises:
        ValueError: no sequences, or a sequence with non-finite features or
            boxes (the tracker refuses such features; trained on them the
            loss would be NaN).
    """
    sequences = list(sequences)
    if not sequences:
        raise ValueError("`sequences` must hold at least one TrackingSequence; received none.")
    for index, sequence in enumerate(sequences):
        for what, values in (("features", sequence.features),
                             ("detection boxes", sequence.detections.boxes)):
            if not np.isfinite(values).all():
                raise ValueError(f"`sequences[{index}]` has non-finite {what} "
                                 f"({int(np.sum(~np.isfinite(values)))} values); the "
                                 "similarity network trains on finite ones only.")
    keras.utils.set_random_seed(seed)
    network_options.setdefault("feature_dim", sequences[0].features.shape[1])
    model = similarity_network(**network_options)
    samples, labels = frame_samples(sequences, history=network_options.get("history", 16),
                                    augmentation=Augmentation(), repeats=repeats, seed=seed)
    trainer = SimilarityTrainer(model)
    trainer.compile(keras.optimizers.Adam(learning_rate), masked_binary_crossentropy)
    history = trainer.fit(samples, labels, batch_size=batch_size, epochs=epochs,
                          verbose=verbose)
    return model, history


def track_sequence(tracker, sequence):
    """Runs `tracker` over a sequence's detections (and features).

    Returns:
        The tracker's output as a `MotTable`.
    """
    tracker.reset()
    outputs = []
    for frame in range(1, sequence.frames + 1):
        detections, features = frame_detections(sequence, frame)
        outputs.append((frame, tracker.update(detections, features=features)))
    return MotTable.from_rows(*tracks_to_table(outputs))


def choose_match_threshold(make_tracker, sequences, candidates=(0.05, 0.1, 0.2, 0.3, 0.5)):
    """The match threshold that gives a tracker the best IDF1 on validation sequences.

    Args:
        make_tracker: `match_threshold -> tracker`.
        sequences: validation `TrackingSequence`s (not the test ones).
        candidates: the thresholds tried.

    Returns:
        `(best threshold, {threshold: overall IDF1})`; ties go to the
        first candidate.
    """
    scores = {}
    for threshold in candidates:
        tracker = make_tracker(threshold)
        pairs = [(sequence.ground_truth, track_sequence(tracker, sequence))
                 for sequence in sequences]
        scores[threshold] = float(evaluate(pairs).loc["OVERALL", "idf1"])
    return max(scores, key=lambda threshold: (scores[threshold], -candidates.index(threshold))), scores


def compare_trackers(trackers, datasets):
    """The overall metrics of every tracker on every dataset.

    Args:
        trackers: tracker name to tracker.
        datasets: dataset name to a list of `TrackingSequence`s.

    Returns:
        A `pandas.DataFrame` indexed by (dataset, tracker) with the columns
        of `evaluation.METRICS`.
    """
    rows = {}
    for dataset, sequences in datasets.items():
        for name, tracker in trackers.items():
            pairs = [(sequence.ground_truth, track_sequence(tracker, sequence))
                     for sequence in sequences]
            rows[(dataset, name)] = evaluate(pairs).loc["OVERALL"]
    return pd.DataFrame(rows).T
