"""`keras-relnet export`: package models with weights, .keras files, bad input."""

import keras
import numpy as np
import pytest

from keras_relnet.applications.registry import build_model
from keras_relnet.cli import main
from keras_relnet.export import run_exported, tflite_custom_operators

SMALL = ["--classes", "10", "--input-size", "32"]


def test_export_package_model_with_weights(tmp_path, capsys):
    model = build_model("lrnet26", classes=10, input_shape=(32, 32, 3), width_multiplier=0.25)
    rng = np.random.default_rng(0)
    for weight in model.weights:  # weights no fresh model has
        weight.assign(weight + rng.normal(size=weight.shape).astype("float32") * 0.05)
    weights = tmp_path / "lrnet26.weights.h5"
    model.save_weights(weights)
    output = tmp_path / "lrnet26.tflite"
    assert main(["export", "--model", "lrnet26", "--weights", str(weights), *SMALL,
                 "--width-multiplier", "0.25", "--output", str(output)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert tflite_custom_operators(output) == []
    images = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(run_exported(output, images), model.predict(images, verbose=0),
                               atol=1e-4)


def test_export_keras_file_to_onnx_with_check_on_given_data(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "small.keras")
    samples = np.random.default_rng(1).normal(size=(5, 8, 8, 3)).astype("float32")
    np.save(tmp_path / "samples.npy", samples)
    output = tmp_path / "small.onnx"
    assert main(["export", "--model", str(tmp_path / "small.keras"), "--format", "onnx",
                 "--representative-data", str(tmp_path / "samples.npy"),
                 "--output", str(output)]) == 0
    assert "on 4 inputs" in capsys.readouterr().out
    np.testing.assert_allclose(run_exported(output, samples), model.predict(samples, verbose=0),
                               atol=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (["--model", "lrnet27"], "`model` must be one of"),
    (["--model", "lrnet26", "--quantization", "int8"], "`representative_data` is required"),
    (["--model", "lrnet26", "--weights", "missing.weights.h5"], "`weights` must be None"),
])
def test_bad_arguments_exit_with_the_message(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *arguments, *SMALL, "--output", str(tmp_path / "model.tflite")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_overwrite(tmp_path, capsys):
    output = tmp_path / "model.tflite"
    output.write_text("keep me")
    with pytest.raises(SystemExit):
        main(["export", "--model", "lrnet26", *SMALL, "--output", str(output)])
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert output.read_text() == "keep me"
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)).save(tmp_path / "small.keras")
    assert main(["export", "--model", str(tmp_path / "small.keras"), "--output", str(output),
                 "--overwrite"]) == 0
    assert tflite_custom_operators(output) == []


def test_a_failed_check_leaves_nothing(tmp_path, capsys, monkeypatch):
    from keras_relnet.export import command

    def failing(path, inputs):
        raise ValueError("the exported model did not run")

    monkeypatch.setattr(command, "run_exported", failing)
    inputs = keras.Input((8, 8, 3))
    model_file = tmp_path / "small.keras"
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)).save(model_file)
    for name in ("saved", "model.tflite"):  # a directory, then a file
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "--model", str(model_file), "--output", str(tmp_path / name)])
        assert exit_info.value.code == 2
        assert "did not run" in capsys.readouterr().err
    assert [path.name for path in tmp_path.iterdir()] == ["small.keras"]


def test_weights_of_another_width_are_one_clear_error(tmp_path, capsys):
    narrow = build_model("lrnet26", classes=10, input_shape=(32, 32, 3), width_multiplier=0.25)
    narrow.save_weights(tmp_path / "narrow.weights.h5")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "lrnet26", "--weights", str(tmp_path / "narrow.weights.h5"),
              *SMALL, "--output", str(tmp_path / "model.tflite")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "do not fit this model" in error and "width_multiplier" in error
    assert "could not be loaded" not in error
    assert not (tmp_path / "model.tflite").exists()


def small_keras_file(tmp_path):
    inputs = keras.Input((8, 8, 3))
    path = tmp_path / "small.keras"
    keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs)).save(path)
    return path


def test_int8_export_refuses_non_finite_representative_data_and_leaves_nothing(tmp_path, capsys):
    # One NaN once crashed the converter (exit 139) and left a hidden file.
    samples = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype("float32")
    samples[2, 1, 3, 0] = np.nan
    np.save(tmp_path / "samples.npy", samples)
    model_file = small_keras_file(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(model_file), "--quantization", "int8",
              "--representative-data", str(tmp_path / "samples.npy"),
              "--output", str(tmp_path / "model.tflite")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "`representative_data` for input 'input_layer" in error  # Keras numbers the name
    assert "must be finite; received 1 NaN or infinite values, the first at index [2, 1, 3, 0]" \
        in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["samples.npy", "small.keras"]


@pytest.mark.parametrize("content, message", [
    (None, "missing.npy: no such file"),
    ("1 2 3\n", "is not a NumPy .npy array file"),
])
def test_representative_data_that_is_no_array_file_is_one_clear_error(
        content, message, tmp_path, capsys):
    data = tmp_path / "missing.npy"
    if content is not None:
        data = tmp_path / "samples.txt"
        data.write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(small_keras_file(tmp_path)), "--quantization", "int8",
              "--representative-data", str(data), "--output", str(tmp_path / "m.tflite")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"--representative-data {data}" in error and message in error


def test_an_existing_output_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    from keras_relnet.export import command

    def never(*arguments, **options):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(command, "load_model", never)
    output = tmp_path / "model.onnx"
    output.write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", "lrnet101", "--output", str(output)])
    assert exit_info.value.code == 2
    assert f"--output {output} already exists" in capsys.readouterr().err
