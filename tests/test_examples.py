"""The README's demo and benchmark run end to end (slow: minutes each)."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_script(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow
def test_digits_demo_reaches_95_percent_reloads_and_fails_broken_exports(tmp_path):
    result = run_script("examples/train_digits.py", "--output-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "DEMO OK" in result.stdout
    # The three broken exports (examples/digits_mutations.py) each fail the checks.
    assert result.stdout.count(" caught: ") == 3, result.stdout[-3000:]
    assert "NOT CAUGHT" not in result.stdout
    for name in ("lrnet26_digits.keras", "lrnet26_digits.tflite", "lrnet26_digits_int8.tflite",
                 "lrnet26_digits.onnx"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_local_relation_benchmark_quick_run_measures_the_kernel_and_the_models():
    result = run_script("benchmarks/local_relation.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = {}
    for line in out.splitlines():
        match = re.match(r"\s+(\d+x\d+x\d+) (custom|naive extract_patches|depthwise 7x7)\s+"
                         r"([\d.]+)\s+([\d.]+)\s+([\d.]+) .* ([\d.]+)x$", line)
        if match:
            shape, name, forward, backward, _, peak = match.groups()
            rows[shape, name] = float(forward), float(backward), float(peak)
    for shape in ("14x14x400", "7x7x800"):
        custom, naive = rows[shape, "custom"], rows[shape, "naive extract_patches"]
        assert 0 < custom[0] < custom[1], out  # the forward is part of fwd+bwd
        assert naive[1] > 5 * custom[1], out  # the kernel beats patch tensors by far
        assert custom[2] <= 3.0, out  # peak memory within 3x input + output
    peaks = re.search(r"matmul (\d+) GFLOP/s .* copy ([\d.]+) GB/s", out)
    assert peaks and float(peaks.group(1)) > 1 and float(peaks.group(2)) > 0.1, out
    fractions = re.findall(r"^\s+\d+x\d+x\d+\s+[\d.]+\s+[\d.]+\s+(\d+)%", out, re.M)
    assert len(fractions) == 2 and all(0 < int(f) <= 100 for f in fractions), out
    ratio = re.search(r"^inference, batch 1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x", out, re.M)
    assert ratio, out
    resnet, lrnet, quoted = map(float, ratio.groups())
    assert abs(lrnet / resnet - quoted) < 0.02 and 0.5 < quoted < 10, out


@pytest.mark.slow
def test_context_benchmark_quick_run_prints_every_model():
    result = run_script("benchmarks/context_blocks.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("ResNet-50", "GC-ResNet-50", "SE-ResNet-50", "NL-ResNet-50"):
        assert name in result.stdout, result.stdout


@pytest.mark.slow
def test_object_relation_benchmark_quick_run_prints_both_sizes():
    result = run_script("benchmarks/object_relation.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines() if re.match(r"\s+\d+ ", line)]
    assert [row[0] for row in rows] == ["64", "128"], result.stdout
    assert all(len(row) == 11 for row in rows), result.stdout


@pytest.mark.slow
def test_export_benchmark_quick_run_reports_ratios_graphs_and_parity():
    result = run_script("benchmarks/export.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    latency, graphs = result.stdout.split("Graphs, sizes and parity")
    ratios = {line.split()[0]: [float(r) for r in re.findall(r"\(\s*([\d.]+)x\)", line)]
              for line in latency.splitlines() if line.startswith(("resnet50 ", "lrnet26 "))}
    assert ratios["resnet50"] == [1.0] * 4, result.stdout  # the baseline
    assert len(ratios["lrnet26"]) == 4 and all(r > 0 for r in ratios["lrnet26"])
    row = next(line for line in graphs.splitlines() if line.startswith("lrnet26 "))
    columns = row.split()
    assert int(columns[2]) > 0 and int(columns[3]) >= 1, row  # operators, partitions
    assert float(columns[10]) <= 1e-4 and float(columns[11]) <= 1e-4, row  # parity
    assert set(re.findall(r"[A-Z_]{4,}", " ".join(columns[13:]))) <= {"GATHER",
                                                                        "STRIDED_SLICE"}, row


@pytest.mark.slow
def test_learned_nms_example_runs():
    result = run_script("examples/learned_nms.py", "--steps", "300")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "greedy NMS" in result.stdout


def test_input_pipeline_benchmark_quick_run_prints_every_pipeline():
    result = run_script("benchmarks/input_pipeline.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if re.search(r"\d\.\d\dx$", line)]
    assert len(rows) == 4 and rows[0].endswith(" 1.00x"), result.stdout


@pytest.mark.slow
def test_kernel_levels_benchmark_compares_two_libraries_that_agree():
    result = run_script("benchmarks/kernel_levels.py", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    agreement = re.search(r"largest output difference to native: (.*)", result.stdout).group(1)
    differences = [float(part.split()[1]) for part in agreement.split(", ")]
    assert differences and max(differences) <= 1e-4, result.stdout
    ratios = [float(r) for r in re.findall(r"\| (\d+\.\d\d)x \|", result.stdout)]
    native_rows = [line for line in result.stdout.splitlines() if "| native |" in line]
    assert len(native_rows) == 4 and all(" 1.00x " in row for row in native_rows)
    assert all(0.2 < ratio < 5 for ratio in ratios), result.stdout
