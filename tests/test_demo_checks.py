"""The digits demo's export criteria (examples/digits_checks.py) on made-up
outputs: what passes, and that each criterion alone fails a broken artefact.
The demo itself (CI's `make demo`) runs them on three real broken exports."""

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
import digits_checks  # noqa: E402


def keras_outputs(count=400, seed=0):
    """Softmax outputs and labels of a made-up 10-class model: 95% right, a
    fifth of the digits close calls."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    logits = rng.normal(size=(count, 10))
    predicted = np.where(rng.uniform(size=count) < 0.95, labels, (labels + 1) % 10)
    logits[np.arange(count), predicted] += np.where(rng.uniform(size=count) < 0.8, 8.0, 0.5)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probabilities, labels


def test_a_faithful_int8_artefact_passes_even_when_close_calls_flip():
    want, labels = keras_outputs()
    report = digits_checks.parity_report(want, want, labels)
    assert digits_checks.parity_failures("m", "int8", report) == []
    assert report["agreement"] == report["clear_agreement"] == 1.0
    # Quantization noise that flips some of the close calls only.
    got = want + np.random.default_rng(1).normal(0, 2e-3, want.shape)
    close = np.sort(want, -1)[:, -1] - np.sort(want, -1)[:, -2] < digits_checks.CLEAR_MARGIN
    flipped = np.flatnonzero(close)[:8]
    got[flipped] = got[flipped][:, ::-1]
    report = digits_checks.parity_report(got, want, labels)
    assert report["agreement"] < 0.99 and report["clear_agreement"] == 1.0
    assert digits_checks.parity_failures("m", "int8", report) == []


@pytest.mark.parametrize("broken, criterion", [
    ("clear digits flipped", "agreement on the clear digits"),
    ("close calls all wrong", "points below Keras'"),
    ("probabilities shifted", "mean |int8 - Keras|"),
])
def test_each_int8_criterion_fails_a_broken_artefact(broken, criterion):
    want, labels = keras_outputs()
    got = want.copy()
    top2 = np.sort(want, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= digits_checks.CLEAR_MARGIN
    right = want.argmax(-1) == labels
    if broken == "clear digits flipped":  # 2% of the clear digits, softly
        rows = np.flatnonzero(clear)[: int(0.02 * clear.sum()) + 1]
        got[rows] = np.roll(want[rows], 1, axis=-1) * 0.1 + want[rows] * 0.0
    elif broken == "close calls all wrong":  # accuracy falls, clear digits kept
        rows = np.flatnonzero(~clear & right)
        got[rows] = np.roll(want[rows], 1, axis=-1)
    else:  # every probability off by 0.1 or 0.011
        got = want + 0.1 * np.where(want == want.max(-1, keepdims=True), -1, 1 / 9)
    report = digits_checks.parity_report(got, want, labels)
    failures = digits_checks.parity_failures("m.tflite", "int8", report)
    assert any(criterion in failure for failure in failures), (report, failures)


def test_float32_artefacts_are_held_to_their_tolerance_on_every_digit():
    want, labels = keras_outputs()
    tolerance = digits_checks.FLOAT32_TOLERANCE
    near = digits_checks.parity_report(want + 0.5 * tolerance, want, labels)
    far = want.copy()
    far[0] += 2 * tolerance  # one digit is enough
    far = digits_checks.parity_report(far, want, labels)
    assert digits_checks.parity_failures("m", "float32", near) == []
    assert "differs from Keras" in digits_checks.parity_failures("m", "float32", far)[0]


def test_float16_is_bounded_on_the_clear_digits_and_on_average():
    want, labels = keras_outputs()
    top2 = np.sort(want, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= digits_checks.CLEAR_MARGIN
    close_moved = want.copy()
    close_moved[np.flatnonzero(~clear)[0]] += 0.03  # a steep close call: allowed
    clear_moved = want.copy()
    clear_moved[np.flatnonzero(clear)[0]] += 0.03
    everywhere = want + 2 * digits_checks.FLOAT16_MEAN_DIFFERENCE
    failures = {name: digits_checks.parity_failures(
        "m", "float16", digits_checks.parity_report(got, want, labels))
        for name, got in [("close", close_moved), ("clear", clear_moved),
                          ("everywhere", everywhere)]}
    assert failures["close"] == []
    assert "on the clear digits" in failures["clear"][0]
    assert "mean |float16 - Keras|" in failures["everywhere"][0]
