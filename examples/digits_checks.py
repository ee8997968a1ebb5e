"""What the digits demo requires of each exported artefact, as numbers.

The export criteria hold for every correct training, not one lucky run: they
were chosen from `benchmarks/demo_spread.py` (seeds 0-9 on the kernel's CPU
levels and the reference path; the table is in docs/benchmarks.md), each with
a margin over the worst run. `examples/digits_mutations.py` shows that they
still fail broken exports.
"""

import numpy as np

TARGET_ACCURACY = 0.95
# float32 artefacts: max |exported - Keras| over every softmax output.
FLOAT32_TOLERANCE = 1e-4
# float16 rounds every weight to an 11-bit mantissa. On the most ambiguous
# digits (top probability near 0.5, where the softmax is steepest) that alone
# moves a probability by up to ~3e-2, and Keras with its own weights rounded to
# float16 does the same; the median digit moves 2e-5. So the largest
# difference is bounded on the clear digits (below; worst correct run 6.9e-3),
# and the mean on all (worst 1.9e-4).
FLOAT16_CLEAR_TOLERANCE = 2e-2
FLOAT16_MEAN_DIFFERENCE = 1e-3
# int8 changes every activation by up to half a quantization step, so a
# digit whose float top-1 is close may flip: in correct runs, digits whose
# top probability led the runner-up by up to 0.77 did. A digit is "clear"
# when the float model's top probability leads by CLEAR_MARGIN; on those the
# int8 top-1 must agree with Keras'.
CLEAR_MARGIN = 0.8
INT8_CLEAR_AGREEMENT = 0.99
# int8 accuracy at most this far below the float model's (worst run: 2.2 points).
INT8_ACCURACY_DROP = 0.03
# Mean |int8 - Keras| over all probabilities (worst correct run: 4.4e-3).
INT8_MEAN_DIFFERENCE = 1e-2


def accuracy(probabilities, labels):
    """The share of `labels` that are the top-1 of `probabilities`, exactly:
    Keras' float32 metric reports 342 of 360 as 0.94999999, below 0.95.

    Example:
    >>> accuracy(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]))
    0.5
    """
    return float(np.mean(np.asarray(probabilities).argmax(-1) == np.asarray(labels)))


def parity_report(got, want, labels):
    """How an artefact's outputs compare with Keras' on the same digits.

    Args:
        got: `[N, classes]` probabilities from the exported artefact.
        want: `[N, classes]` probabilities from the Keras model.
        labels: `[N]` true classes.

    Returns:
        A dict of floats: `max_difference` and `mean_difference` (of
        `|got - want|`), `clear_max_difference` (over the clear digits: those
        whose Keras top-1 leads by `CLEAR_MARGIN`), `agreement` (top-1 equal
        to Keras'), `clear_agreement` (the same over the clear digits),
        `clear_fraction` (the share of such digits), `accuracy` (of `got`) and
        `keras_accuracy` (of `want`).

    Example:
    >>> want = np.array([[0.9, 0.1], [0.45, 0.55]])
    >>> report = parity_report(np.array([[0.8, 0.2], [0.6, 0.4]]), want, np.array([0, 1]))
    >>> report["agreement"], report["clear_agreement"], report["accuracy"]
    (0.5, 1.0, 0.5)
    """
    got, want = np.asarray(got, "float64"), np.asarray(want, "float64")
    top2 = np.sort(want, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= CLEAR_MARGIN
    same = got.argmax(-1) == want.argmax(-1)
    difference = np.abs(got - want)
    return {
        "max_difference": float(difference.max()),
        "mean_difference": float(difference.mean()),
        "clear_max_difference": float(difference[clear].max()) if clear.any() else 0.0,
        "agreement": float(same.mean()),
        "clear_agreement": float(same[clear].mean()) if clear.any() else 0.0,
        "clear_fraction": float(clear.mean()),
        "accuracy": accuracy(got, labels),
        "keras_accuracy": accuracy(want, labels),
    }


def parity_failures(name, precision, report):
    """The demo's failures of one artefact, as sentences (empty: it passes).

    Args:
        name: the artefact's file name, for the messages.
        precision: "float32", "float16" or "int8".
        report: its `parity_report`.

    Example:
    >>> parity_failures("m.tflite", "float32", {"max_difference": 3e-4})
    ['m.tflite differs from Keras by 3.0e-04 > 0.0001']
    """
    if precision == "float32":
        if report["max_difference"] > FLOAT32_TOLERANCE:
            return [f"{name} differs from Keras by {report['max_difference']:.1e} > "
                    f"{FLOAT32_TOLERANCE}"]
        return []
    failures = []
    if precision == "float16":
        if report["clear_max_difference"] > FLOAT16_CLEAR_TOLERANCE:
            failures.append(f"{name} differs from Keras by {report['clear_max_difference']:.1e} "
                            f"> {FLOAT16_CLEAR_TOLERANCE} on the clear digits")
        if report["mean_difference"] > FLOAT16_MEAN_DIFFERENCE:
            failures.append(f"{name} mean |float16 - Keras| {report['mean_difference']:.1e} > "
                            f"{FLOAT16_MEAN_DIFFERENCE}")
        return failures
    if report["clear_agreement"] < INT8_CLEAR_AGREEMENT:
        failures.append(f"{name} top-1 agreement on the clear digits "
                        f"{report['clear_agreement']:.4f} < {INT8_CLEAR_AGREEMENT}")
    drop = report["keras_accuracy"] - report["accuracy"]
    if drop > INT8_ACCURACY_DROP:
        failures.append(f"{name} accuracy {report['accuracy']:.4f} is {100 * drop:.1f} points "
                        f"below Keras' {report['keras_accuracy']:.4f} "
                        f"(at most {100 * INT8_ACCURACY_DROP:.0f})")
    if report["mean_difference"] > INT8_MEAN_DIFFERENCE:
        failures.append(f"{name} mean |int8 - Keras| {report['mean_difference']:.1e} > "
                        f"{INT8_MEAN_DIFFERENCE}")
    return failures
