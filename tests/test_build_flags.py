"""One build definition: csrc/build_flags.bzl sets the kernels' flags and CPU
levels for every build, and the loader's choice of level follows the CPU."""

import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNELS = ROOT / "keras_relnet" / "ops" / "local_relation"
# By path, as setup.py and the Makefile run it: it needs nothing but the standard library.
_SPEC = importlib.util.spec_from_file_location("kernel_builder", KERNELS / "builder.py")
builder = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(builder)

V3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave", "sse4_2"}
V4 = V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def test_portable_levels_carry_no_machine_specific_flag_and_native_is_apart(monkeypatch):
    monkeypatch.delenv("KERAS_RELNET_CXXFLAGS", raising=False)
    flags = builder.build_flags()
    assert builder.portable_levels("x86_64") == ["baseline", "x86-64-v3", "x86-64-v4"]
    for level in builder.portable_levels("x86_64"):
        assert not any("native" in flag for flag in builder.level_flags(level))
    assert builder.level_flags("baseline") == []
    assert builder.level_flags(builder.NATIVE) == flags["LOCAL_CXX_FLAGS"] == ["-march=native"]
    assert not any(flag.startswith("-march") for flag in flags["CXX_FLAGS"])
    with pytest.raises(ValueError, match="level must be one of .* received 'sse9'"):
        builder.level_flags("sse9")


@pytest.mark.parametrize("features, machine, expected", [
    (V4, "x86_64", ["x86-64-v4", "x86-64-v3", "baseline"]),
    (V3, "x86_64", ["x86-64-v3", "baseline"]),
    (V4 - {"avx512vl"}, "x86_64", ["x86-64-v3", "baseline"]),
    (V3 - {"fma"}, "x86_64", ["baseline"]),
    (set(), "x86_64", ["baseline"]),
    (V4, "aarch64", ["baseline"]),
])
def test_supported_levels_follow_the_cpu_features(features, machine, expected, monkeypatch):
    monkeypatch.delenv("KERAS_RELNET_CPU_LEVEL", raising=False)
    assert builder.supported_levels(features, machine) == expected


def test_the_cpu_level_can_be_capped_but_not_raised(monkeypatch):
    monkeypatch.setenv("KERAS_RELNET_CPU_LEVEL", "baseline")
    assert builder.supported_levels(V4, "x86_64") == ["baseline"]
    monkeypatch.setenv("KERAS_RELNET_CPU_LEVEL", "x86-64-v4")
    with pytest.raises(ValueError, match="KERAS_RELNET_CPU_LEVEL must be one of"):
        builder.supported_levels(V3, "x86_64")


def test_cpu_features_are_read_from_cpuinfo():
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t: fpu\n"
    assert builder.cpu_features(text) == {"fpu", "sse2", "avx2", "fma"}
    assert builder.cpu_features("Features\t: fp asimd\n") == {"fp", "asimd"}
    assert builder.cpu_features("") == frozenset()


def test_cuda_architectures_come_from_the_definition_unless_overridden(monkeypatch):
    monkeypatch.delenv("KERAS_RELNET_CUDA_ARCHS", raising=False)
    assert builder.cuda_architectures() == builder.build_flags()["CUDA_ARCHS"]
    monkeypatch.setenv("KERAS_RELNET_CUDA_ARCHS", "90, 100")
    assert builder.gencode_flags(builder.cuda_architectures()) == [
        "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_100,code=sm_100"]


def test_makefile_and_bazel_read_the_definition_and_repeat_no_flag():
    makefile = (ROOT / "Makefile").read_text()
    bazel = (KERNELS / "csrc" / "BUILD").read_text()
    assert "--print-flags" in makefile and 'load(":build_flags.bzl"' in bazel
    for text in (makefile, bazel):
        assert not re.search(r"-O[0-3]\b|-march=|-gencode|-std=c\+\+|-fno-trapping-math", text)
