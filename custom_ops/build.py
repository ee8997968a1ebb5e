"""Builds the custom local relation kernels into
`keras_relnet/ops/local_relation/_local_relation_ops.so`.

g++ compiles the op registration and the CPU kernels with TensorFlow's own
flags (`tf.sysconfig`); when `nvcc` is found (and `KERAS_RELNET_CUDA` is not
"0") it also compiles the CUDA kernels for `KERAS_RELNET_CUDA_ARCHS`
(default "80,90") and links the GPU kernels in. The build is skipped when
the library is newer than every source (`--force` rebuilds).

    python custom_ops/build.py [--force] [--cuda-objects-only DIR]

`--cuda-objects-only DIR` compiles just the CUDA source for every
architecture into DIR (no TensorFlow needed): the CI check that the kernels
compile on a machine without a GPU.

The flags and CUDA architectures come from `build_flags.bzl`, the one
definition that Bazel and the Makefile read too (`--print-flags NAME` prints
one of its lists, for the Makefile). `--portable` (a wheel build) leaves out
the machine-specific `LOCAL_CXX_FLAGS`.

Environment: `KERAS_RELNET_PORTABLE=1` (as `--portable`),
`KERAS_RELNET_CXXFLAGS` (replaces `LOCAL_CXX_FLAGS`), `KERAS_RELNET_CUDA`
("auto", "1" or "0"), `KERAS_RELNET_CUDA_ARCHS` (comma-separated), `NVCC`.
"""

import ast

import argparse
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
FLAGS_FILE = ROOT / "build_flags.bzl"
SOURCES = ROOT / "custom_ops" / "local_relation"
LIBRARY = ROOT / "keras_relnet" / "ops" / "local_relation" / "_local_relation_ops.so"
CPU_SOURCES = ["local_relation_ops.cc"]
GPU_SOURCES = ["local_relation_gpu.cc"]
CUDA_SOURCE = "local_relation_kernels.cu"


def build_flags():
    """The assignments of `build_flags.bzl`, by name (strings and lists of strings)."""
    tree = ast.parse(FLAGS_FILE.read_text(), str(FLAGS_FILE))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign)}


def cxx_flags(portable):
    """The C++ flags of the op library: portable ones, or tuned for this machine."""
    flags = build_flags()
    local = os.environ.get("KERAS_RELNET_CXXFLAGS")
    local = local.split() if local is not None else flags["LOCAL_CXX_FLAGS"]
    return flags["CXX_FLAGS"] + ([] if portable else local)


def tensorflow_flags():
    """`(compile_flags, link_flags)` of the installed TensorFlow."""
    script = ("import tensorflow as tf; print(' '.join(tf.sysconfig.get_compile_flags())); "
              "print(' '.join(tf.sysconfig.get_link_flags()))")
    lines = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                           text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
                           ).stdout.strip().splitlines()
    return lines[-2].split(), lines[-1].split()


def nvcc():
    """The nvcc to use, or None when CUDA is off or absent."""
    mode = os.environ.get("KERAS_RELNET_CUDA", "auto")
    found = os.environ.get("NVCC") or shutil.which("nvcc")
    if mode == "0":
        return None
    if mode == "1" and not found:
        raise SystemExit("KERAS_RELNET_CUDA=1 but nvcc was not found (set NVCC).")
    return found


def cuda_toolkit(compiler):
    """The CUDA toolkit root (with include/cuda_runtime.h) of `compiler`."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                  pathlib.Path(compiler).resolve().parent.parent, "/usr/local/cuda"]
    for candidate in filter(None, candidates):
        if (pathlib.Path(candidate) / "include" / "cuda_runtime.h").exists():
            return pathlib.Path(candidate)
    raise SystemExit(f"no CUDA toolkit (include/cuda_runtime.h) found for {compiler}; "
                     "set CUDA_HOME or KERAS_RELNET_CUDA=0.")


def cuda_architectures():
    override = os.environ.get("KERAS_RELNET_CUDA_ARCHS")
    if override:
        return [a.strip() for a in override.split(",")]
    return build_flags()["CUDA_ARCHS"]


def gencode_flags(architectures):
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in architectures]


def cuda_object(compiler, output, architectures):
    """Compiles the CUDA kernels (no TensorFlow headers) into `output`."""
    run([compiler, "-c", *build_flags()["NVCC_FLAGS"], "-Xcompiler", "-fPIC",
         *gencode_flags(architectures), str(SOURCES / CUDA_SOURCE), "-o", str(output)])


def run(command):
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)


def up_to_date():
    if not LIBRARY.exists():
        return False
    newest = max(path.stat().st_mtime for path in SOURCES.iterdir())
    inputs = (pathlib.Path(__file__), FLAGS_FILE)
    return LIBRARY.stat().st_mtime > max(newest, *(path.stat().st_mtime for path in inputs))


def build(force=False, portable=False):
    """Builds the library unless it is up to date; returns its path."""
    if not force and up_to_date():
        print(f"{LIBRARY.relative_to(ROOT)} is up to date")
        return LIBRARY
    compile_flags, link_flags = tensorflow_flags()
    sources = [str(SOURCES / name) for name in CPU_SOURCES]
    objects, defines, cuda_libraries = [], [], []
    compiler = nvcc()
    build_dir = ROOT / "build" / "custom_ops"
    build_dir.mkdir(parents=True, exist_ok=True)
    if compiler:
        cuda_home = cuda_toolkit(compiler)
        kernels = build_dir / "local_relation_kernels.o"
        cuda_object(compiler, kernels, cuda_architectures())
        objects.append(str(kernels))
        sources += [str(SOURCES / name) for name in GPU_SOURCES]
        defines += ["-DKERAS_RELNET_WITH_CUDA", "-DGOOGLE_CUDA=1",
                    f"-I{cuda_home / 'include'}"]
        # The static runtime: the library loads on machines without a CUDA toolkit.
        cuda_libraries += [f"-L{cuda_home / 'lib64'}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
    partial = LIBRARY.with_suffix(".so.partial")
    # The CUDA runtime links before TensorFlow, so that the kernels register
    # with this build's runtime rather than symbols TensorFlow may export.
    run(["g++", "-shared", "-fPIC", *cxx_flags(portable), "-Wno-interference-size", *compile_flags,
         *defines, *sources, *objects, "-o", str(partial), *cuda_libraries, *link_flags])
    os.replace(partial, LIBRARY)
    return LIBRARY


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--portable", action="store_true",
                        help="no machine-specific flags (a wheel)")
    parser.add_argument("--cuda-objects-only", metavar="DIR",
                        help="only compile the CUDA kernels, one object per architecture")
    parser.add_argument("--print-flags", metavar="NAME",
                        choices=["CXX_FLAGS", "NVCC_FLAGS", "GENCODE"],
                        help="print flags from build_flags.bzl and exit (GENCODE: the "
                             "-gencode flags of CUDA_ARCHS)")
    args = parser.parse_args()
    if args.print_flags:
        flags = (gencode_flags(cuda_architectures()) if args.print_flags == "GENCODE"
                 else build_flags()[args.print_flags])
        print(" ".join(flags))
        return
    if args.cuda_objects_only:
        compiler = os.environ.get("NVCC") or shutil.which("nvcc")
        if not compiler:
            raise SystemExit("nvcc was not found (set NVCC).")
        directory = pathlib.Path(args.cuda_objects_only)
        directory.mkdir(parents=True, exist_ok=True)
        for architecture in cuda_architectures():
            cuda_object(compiler, directory / f"local_relation_kernels_sm{architecture}.o",
                        [architecture])
        return
    portable = args.portable or os.environ.get("KERAS_RELNET_PORTABLE") == "1"
    print(f"built {build(force=args.force, portable=portable)}")


if __name__ == "__main__":
    main()
