"""One build definition: build_flags.bzl sets the kernels' flags for every build."""

import importlib.util
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("kernel_build", ROOT / "custom_ops" / "build.py")
build = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(build)


def test_a_wheel_is_portable_and_a_local_build_is_tuned(monkeypatch):
    monkeypatch.delenv("KERAS_RELNET_CXXFLAGS", raising=False)
    flags = build.build_flags()
    assert build.cxx_flags(portable=True) == flags["CXX_FLAGS"]
    assert build.cxx_flags(portable=False) == flags["CXX_FLAGS"] + flags["LOCAL_CXX_FLAGS"]
    assert "-march=native" in flags["LOCAL_CXX_FLAGS"]
    assert not any(flag.startswith("-march") for flag in flags["CXX_FLAGS"])


def test_cuda_architectures_come_from_the_definition_unless_overridden(monkeypatch):
    monkeypatch.delenv("KERAS_RELNET_CUDA_ARCHS", raising=False)
    assert build.cuda_architectures() == build.build_flags()["CUDA_ARCHS"]
    monkeypatch.setenv("KERAS_RELNET_CUDA_ARCHS", "90, 100")
    assert build.gencode_flags(build.cuda_architectures()) == [
        "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_100,code=sm_100"]


def test_makefile_and_bazel_read_the_definition_and_repeat_no_flag():
    makefile, bazel = (ROOT / "Makefile").read_text(), (ROOT / "BUILD").read_text()
    assert "--print-flags" in makefile and 'load("//:build_flags.bzl"' in bazel
    for text in (makefile, bazel):
        assert not re.search(r"-O[0-3]\b|-march=|-gencode|-std=c\+\+|-fno-trapping-math", text)
