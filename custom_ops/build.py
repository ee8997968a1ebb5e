"""Builds the custom local relation kernels into `keras_relnet/ops/local_relation/_local_relation_ops.so`.

g++ compiles the op registration and the CPU kernels with TensorFlow's own
flags (`tf.sysconfig`); when `nvcc` is found (and `KERAS_RELNET_CUDA` is not
"0") it also compiles the CUDA kernels for `KERAS_RELNET_CUDA_ARCHS`
(default "80,90") and links the GPU kernels in. The build is skipped when
the library is newer than every source (`--force` rebuilds).

    python custom_ops/build.py [--force] [--cuda-objects-only DIR]

`--cuda-objects-only DIR` compiles just the CUDA source for every
architecture into DIR (no TensorFlow needed): the CI check that the kernels
compile on a machine without a GPU.

Environment: `KERAS_RELNET_CXXFLAGS` (default "-O3 -march=native": the
library is compiled on the machine that runs it), `KERAS_RELNET_CUDA`
("auto", "1" or "0"), `KERAS_RELNET_CUDA_ARCHS`, `NVCC`.
"""

import argparse
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ROOT / "custom_ops" / "local_relation"
LIBRARY = ROOT / "keras_relnet" / "ops" / "local_relation" / "_local_relation_ops.so"
CPU_SOURCES = ["local_relation_ops.cc"]
GPU_SOURCES = ["local_relation_gpu.cc"]
CUDA_SOURCE = "local_relation_kernels.cu"


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
    return [a.strip() for a in os.environ.get("KERAS_RELNET_CUDA_ARCHS", "80,90").split(",")]


def cuda_object(compiler, output, architectures):
    """Compiles the CUDA kernels (no TensorFlow headers) into `output`."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in architectures]
    run([compiler, "-c", "-O3", "-std=c++17", "-Xcompiler", "-fPIC", *gencode,
         str(SOURCES / CUDA_SOURCE), "-o", str(output)])


def run(command):
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)


def up_to_date():
    if not LIBRARY.exists():
        return False
    newest = max(path.stat().st_mtime for path in SOURCES.iterdir())
    return LIBRARY.stat().st_mtime > max(newest, pathlib.Path(__file__).stat().st_mtime)


def build(force=False):
    """Builds the library unless it is up to date; returns its path."""
    if not force and up_to_date():
        print(f"{LIBRARY.relative_to(ROOT)} is up to date")
        return LIBRARY
    compile_flags, link_flags = tensorflow_flags()
    cxxflags = os.environ.get("KERAS_RELNET_CXXFLAGS", "-O3 -march=native").split()
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
    # -fno-trapping-math lets GCC vectorise the polynomial exp (floor, float->int).
    run(["g++", "-shared", "-fPIC", *cxxflags, "-fno-trapping-math",
         "-Wno-deprecated-declarations", "-Wno-interference-size", *compile_flags,
         *defines, *sources, *objects, "-o", str(partial), *cuda_libraries, *link_flags])
    os.replace(partial, LIBRARY)
    return LIBRARY


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--cuda-objects-only", metavar="DIR",
                        help="only compile the CUDA kernels, one object per architecture")
    args = parser.parse_args()
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
    print(f"built {build(force=args.force)}")


if __name__ == "__main__":
    main()
