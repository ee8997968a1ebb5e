"""CLEAR MOT and identity metrics of a tracker's output with `motmetrics`.

`motmetrics` 1.4.0's own IoU distance uses `np.asfarray`, which NumPy 2
removed, so the distances come from `assignment.box_iou` here and go to
`MOTAccumulator.update` directly.
"""

import numpy as np

from keras_relnet.tracking.assignment import box_iou
from keras_relnet.tracking.mot_format import check_unique_ids, xywh_to_xyxy

METRICS = ("mota", "idf1", "num_switches", "motp", "precision", "recall",
           "num_false_positives", "num_misses", "mostly_tracked", "num_unique_objects")


def accumulate(ground_truth, hypotheses, iou_threshold=0.5):
    """A `motmetrics.MOTAccumulator` of one sequence.

    Args:
        ground_truth: `MotTable` of the true objects.
        hypotheses: `MotTable` of the tracker's output.
        iou_threshold: the lowest IoU at which a hypothesis can cover a
            true object (the distance is `1 - IoU`).

    Returns:
        The accumulator.
    """
    import motmetrics

    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    frames = np.union1d(ground_truth.frames, hypotheses.frames)
    for frame in frames.tolist():
        truth, guess = ground_truth.frame(frame), hypotheses.frame(frame)
        iou = box_iou(xywh_to_xyxy(ground_truth.boxes[truth]),
                      xywh_to_xyxy(hypotheses.boxes[guess]))
        distances = np.where(iou >= iou_threshold, 1.0 - iou, np.nan)
        accumulator.update(ground_truth.ids[truth].tolist(), hypotheses.ids[guess].tolist(),
                           distances, frameid=int(frame))
    return accumulator


def evaluate(pairs, names=None, iou_threshold=0.5):
    """MOTA, IDF1, ID switches, MOTP and more, per sequence and overall.

    Args:
        pairs: `(ground_truth, hypotheses)` `MotTable` pairs, one per sequence.
        names: the sequence names (default "0", "1", ...).
        iou_threshold: see `accumulate`.

    Returns:
        A `pandas.DataFrame`, one row per sequence plus "OVERALL" (the
        metrics over all sequences' events, as MOTChallenge sums them), with
        the columns `METRICS` (MOTA, IDF1, MOTP, precision and recall as
        fractions; MOTP is the mean `1 - IoU` of the matches).

    Raises:
        ValueError: a ground truth or hypotheses table with two rows of one
            id in one frame (naming the sequence, frame and id), a ground
            truth without objects, a count of `names` other than of
            `pairs`, or an `iou_threshold` outside (0, 1].

    Example:
    >>> from keras_relnet.tracking.mot_format import MotTable
    >>> truth = MotTable.from_rows([1, 2], [1, 1], [[0, 0, 10, 10], [1, 0, 10, 10]])
    >>> float(evaluate([(truth, truth)]).loc["OVERALL", "mota"])
    1.0
    """
    import motmetrics

    pairs = list(pairs)
    names = list(names) if names is not None else [str(index) for index in range(len(pairs))]
    if len(names) != len(pairs):
        raise ValueError(f"`names` must name each of the {len(pairs)} sequences of `pairs`; "
                         f"received {len(names)} names.")
    if not 0 < iou_threshold <= 1:  # also refuses NaN
        raise ValueError(f"`iou_threshold` must be in (0, 1]; received {iou_threshold}.")
    for name, (truth, guess) in zip(names, pairs):
        check_unique_ids(truth, f"the ground truth of sequence {name!r}")
        check_unique_ids(guess, f"the hypotheses of sequence {name!r}")
        if len(truth) == 0:
            raise ValueError(f"the ground truth of sequence {name!r} has no objects; MOTA and "
                             "IDF1 are undefined without any.")
    accumulators = [accumulate(truth, guess, iou_threshold) for truth, guess in pairs]
    return motmetrics.metrics.create().compute_many(
        accumulators, metrics=list(METRICS), names=names, generate_overall=True)
