"""Compiles the local relation kernels (`csrc/`) into TensorFlow op libraries,
one per CPU instruction-set level, and records how they were built.

    python keras_relnet/ops/local_relation/builder.py [--levels this|all|native|L1,L2]
        [--output DIR] [--force] [--quiet]
    python keras_relnet/ops/local_relation/builder.py --print-flags CXX_FLAGS|NVCC_FLAGS|GENCODE
    python keras_relnet/ops/local_relation/builder.py --cuda-objects-only DIR

It imports nothing but the standard library, so setup.py, the Makefile and a
machine without TensorFlow can run it by path; the installed TensorFlow's
flags come from `sys.executable` in a subprocess.

A build writes `_local_relation_ops.<level>.so` per level and
`_local_relation_ops.json` (`BUILD_INFO`): the TensorFlow version and C++ ABI
the libraries were compiled against, each level's flags, the CUDA
architectures and a digest of the sources. g++ compiles the op registration
and the CPU kernels with TensorFlow's flags; when `nvcc` is found (and
`KERAS_RELNET_CUDA` is not "0") the CUDA kernels are compiled once and linked
into every level. The flags come from `csrc/build_flags.bzl`, which Bazel and
the Makefile read too.

Environment: `CXX` (default g++), `NVCC`, `KERAS_RELNET_CUDA` ("auto", "1"
or "0"), `KERAS_RELNET_CUDA_ARCHS` (comma-separated), `KERAS_RELNET_CXXFLAGS`
(replaces the "native" level's flags).
"""

import argparse
import ast
import concurrent.futures
import hashlib
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent
SOURCES = PACKAGE_DIR / "csrc"
FLAGS_FILE = SOURCES / "build_flags.bzl"
CPU_SOURCES = ("local_relation_grad_cpu.cc", "local_relation_ops.cc")  # heaviest first
GPU_SOURCES = ("local_relation_gpu.cc",)
CUDA_SOURCE = "local_relation_kernels.cu"
BUILD_INFO = "_local_relation_ops.json"
NATIVE = "native"
# What each x86-64 level needs, as /proc/cpuinfo names the features ("abm" is LZCNT).
_X86_LEVEL_FEATURES = {
    "x86-64-v3": {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
}
_X86_LEVEL_FEATURES["x86-64-v4"] = _X86_LEVEL_FEATURES["x86-64-v3"] | {
    "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}


def library_name(level):
    """The file name of a level's library.

    Example:
    >>> library_name("x86-64-v3")
    '_local_relation_ops.x86-64-v3.so'
    """
    return f"_local_relation_ops.{level}.so"


def build_flags():
    """The assignments of `csrc/build_flags.bzl`, by name."""
    tree = ast.parse(FLAGS_FILE.read_text(), str(FLAGS_FILE))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign)}


def portable_levels(machine=None):
    """The portable levels built for a CPU architecture, worst first: every
    level of `CPU_LEVELS` on x86-64, "baseline" elsewhere.

    Example:
    >>> portable_levels("aarch64")
    ['baseline']
    >>> portable_levels("x86_64")
    ['baseline', 'x86-64-v3', 'x86-64-v4']
    """
    machine = (machine or platform.machine()).lower()
    levels = list(build_flags()["CPU_LEVELS"])
    return levels if machine in ("x86_64", "amd64") else levels[:1]


def cpu_features(cpuinfo=None):
    """The CPU's feature names as Linux reports them (empty where unknown).

    Args:
        cpuinfo: the text of /proc/cpuinfo; read from the machine when None.
    """
    if cpuinfo is None:
        try:
            cpuinfo = pathlib.Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def supported_levels(features=None, machine=None):
    """The portable levels this CPU runs, best first.

    `KERAS_RELNET_CPU_LEVEL` caps the choice (for example "baseline", to run
    the portable fallback on a machine that has more).

    Example:
    >>> supported_levels({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm",
    ...                   "movbe", "xsave"}, "x86_64")
    ['x86-64-v3', 'baseline']
    """
    features = cpu_features() if features is None else features
    levels = [level for level in portable_levels(machine)
              if _X86_LEVEL_FEATURES.get(level, set()) <= set(features)]
    cap = os.environ.get("KERAS_RELNET_CPU_LEVEL")
    if cap:
        if cap not in levels:
            raise ValueError(f"KERAS_RELNET_CPU_LEVEL must be one of {levels} on this CPU, "
                             f"received {cap!r}")
        levels = levels[:levels.index(cap) + 1]
    return levels[::-1]


def level_flags(level):
    """The compiler flags that select a level's instructions.

    Example:
    >>> level_flags("x86-64-v4")
    ['-march=x86-64-v4']
    """
    if level == NATIVE:
        local = os.environ.get("KERAS_RELNET_CXXFLAGS")
        return local.split() if local is not None else build_flags()["LOCAL_CXX_FLAGS"]
    levels = build_flags()["CPU_LEVELS"]
    if level not in levels:
        raise ValueError(f"level must be one of {[*levels, NATIVE]}, received {level!r}")
    return list(levels[level])


def sources_digest():
    """A digest of everything a build depends on: the kernel sources, the
    flags and this file. A cached library with another digest is stale."""
    digest = hashlib.sha256()
    for path in sorted([*SOURCES.iterdir(), pathlib.Path(__file__)]):
        if path.is_file() and path.name != "BUILD":
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def tensorflow_build_facts(python=sys.executable):
    """`{"version", "cxx11_abi", "compile_flags", "link_flags", "include"}` of
    the TensorFlow that `python` imports; raises `RuntimeError` without one."""
    script = ("import json, tensorflow as tf; s = tf.sysconfig; print(json.dumps({"
              "'version': tf.__version__, 'cxx11_abi': s.CXX11_ABI_FLAG, "
              "'compile_flags': s.get_compile_flags(), 'link_flags': s.get_link_flags(), "
              "'include': s.get_include()}))")
    result = subprocess.run([python, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"TensorFlow is not importable by {python} ({last})")
    return json.loads(result.stdout.strip().splitlines()[-1])


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


def cxx_compiler():
    """The C++ compiler: `CXX`, else g++."""
    return os.environ.get("CXX") or "g++"


def compiler_version(compiler):
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True)
    return result.stdout.splitlines()[0] if result.returncode == 0 else compiler


def cuda_object(compiler, output, architectures, quiet=False):
    """Compiles the CUDA kernels (no TensorFlow headers) into `output`."""
    _run([compiler, "-c", *build_flags()["NVCC_FLAGS"], "-Xcompiler", "-fPIC",
          *gencode_flags(architectures), str(SOURCES / CUDA_SOURCE), "-o", str(output)], quiet)


def _run(command, quiet=False):
    if not quiet:
        print(" ".join(command), flush=True)
    subprocess.run(command, check=True)


def _compile(level, source, scratch, tensorflow, cuda, quiet):
    """Compiles one source for one level into an object in `scratch`."""
    defines = []
    if cuda:
        defines = ["-DKERAS_RELNET_WITH_CUDA", "-DGOOGLE_CUDA=1", f"-I{cuda['home'] / 'include'}"]
    output = pathlib.Path(scratch) / f"{pathlib.Path(source).stem}.{level}.o"
    _run([cxx_compiler(), "-c", "-fPIC", *build_flags()["CXX_FLAGS"], *level_flags(level),
          "-Wno-interference-size", "-Wno-psabi", *tensorflow["compile_flags"], *defines,
          str(SOURCES / source), "-o", str(output)], quiet)
    return output


def _link(level, objects, output_dir, tensorflow, cuda, quiet):
    """Links one level's library, atomically (a reader never sees half a file)."""
    libraries = []
    if cuda:
        objects = [*objects, cuda["object"]]
        # The static runtime: the library loads on machines without a CUDA toolkit.
        libraries = [f"-L{cuda['home'] / 'lib64'}", "-lcudart_static", "-ldl", "-lrt",
                     "-lpthread"]
    target = output_dir / library_name(level)
    partial = output_dir / f".{target.name}.{os.getpid()}.partial"
    # The CUDA runtime links before TensorFlow, so that the kernels register
    # with this build's runtime rather than symbols TensorFlow may export.
    _run([cxx_compiler(), "-shared", *map(str, objects), "-o", str(partial), *libraries,
          *tensorflow["link_flags"]], quiet)
    os.replace(partial, target)
    return {"file": target.name, "flags": build_flags()["CXX_FLAGS"] + level_flags(level)}


def read_build_info(directory):
    """The build record of the libraries in `directory`, or None."""
    try:
        return json.loads((pathlib.Path(directory) / BUILD_INFO).read_text())
    except (OSError, ValueError):
        return None


def is_up_to_date(directory, levels, tensorflow_version):
    """Whether `directory` holds every level, built from these sources for this TensorFlow."""
    info = read_build_info(directory)
    return bool(info) and info["sources"] == sources_digest() and \
        info["tensorflow"] == tensorflow_version and \
        all((pathlib.Path(directory) / library_name(level)).exists()
            and level in info["libraries"] for level in levels)


def build(output_dir=PACKAGE_DIR, levels=None, force=False, quiet=False):
    """Builds the libraries of `levels` into `output_dir` (unless up to date)
    and writes their build record.

    Args:
        output_dir: where the libraries and `_local_relation_ops.json` go.
        levels: level names; default the best portable level of this CPU.
        force: rebuild even when up to date.
        quiet: do not echo the compiler commands.

    Returns:
        The build record (a dict, also written as JSON).
    """
    output_dir = pathlib.Path(output_dir)
    levels = list(levels or supported_levels()[:1])
    tensorflow = tensorflow_build_facts()
    if not force:
        # Levels built earlier from the same sources for the same TensorFlow are kept.
        levels = [level for level in levels
                  if not is_up_to_date(output_dir, [level], tensorflow["version"])]
        if not levels:
            if not quiet:
                print(f"the libraries in {output_dir} are up to date")
            return read_build_info(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    compiler, cuda = nvcc(), None
    with tempfile.TemporaryDirectory(prefix="keras-relnet-cuda-") as scratch:
        if compiler:
            architectures = cuda_architectures()
            cuda = {"home": cuda_toolkit(compiler), "object": pathlib.Path(scratch) / "k.o",
                    "architectures": architectures}
            cuda_object(compiler, cuda["object"], architectures, quiet)
        sources = [*CPU_SOURCES, *(GPU_SOURCES if cuda else ())]
        # Every (level, source) compiles in parallel, the heaviest (the CPU kernels) first.
        jobs = [(level, source) for source in sources for level in levels]
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            objects = dict(zip(jobs, pool.map(
                lambda job: _compile(*job, scratch, tensorflow, cuda, quiet), jobs)))
        built = {level: _link(level, [objects[level, source] for source in sources],
                              output_dir, tensorflow, cuda, quiet) for level in levels}
    earlier = read_build_info(output_dir)
    if earlier and earlier["sources"] == sources_digest() and \
            earlier["tensorflow"] == tensorflow["version"]:
        built = {**{level: entry for level, entry in earlier["libraries"].items()
                    if (output_dir / entry["file"]).exists()}, **built}
    info = {
        "tensorflow": tensorflow["version"],
        "cxx11_abi": tensorflow["cxx11_abi"],
        "compiler": compiler_version(cxx_compiler()),
        "cuda_architectures": cuda["architectures"] if cuda else [],
        "sources": sources_digest(),
        "libraries": built,
    }
    if NATIVE in levels:
        info["native_cpu_features"] = sorted(cpu_features())
    elif earlier and NATIVE in built:
        info["native_cpu_features"] = earlier.get("native_cpu_features")
    partial = output_dir / f".{BUILD_INFO}.{os.getpid()}.partial"
    partial.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(partial, output_dir / BUILD_INFO)
    return info


def parse_levels(text):
    """`--levels`: "this" (the best portable level of this CPU), "all" (every
    portable level of this architecture, a wheel), "native", or names."""
    if text == "this":
        return supported_levels()[:1]
    if text == "all":
        return portable_levels()
    levels = [level.strip() for level in text.split(",")]
    for level in levels:
        level_flags(level)  # raises on an unknown name
    return levels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="this", help=parse_levels.__doc__.split(": ", 1)[1])
    parser.add_argument("--output", default=str(PACKAGE_DIR),
                        help="directory of the libraries (default: beside this file)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--quiet", action="store_true", help="do not echo compiler commands")
    parser.add_argument("--cuda-objects-only", metavar="DIR",
                        help="only compile the CUDA kernels, one object per architecture")
    parser.add_argument("--print-flags", metavar="NAME",
                        choices=["CXX_FLAGS", "NVCC_FLAGS", "GENCODE"],
                        help="print flags from build_flags.bzl and exit (GENCODE: the "
                             "-gencode flags of CUDA_ARCHS)")
    args = parser.parse_args(argv)
    if args.print_flags:
        flags = (gencode_flags(cuda_architectures()) if args.print_flags == "GENCODE"
                 else build_flags()[args.print_flags])
        print(" ".join(flags))
        return 0
    if args.cuda_objects_only:
        compiler = os.environ.get("NVCC") or shutil.which("nvcc")
        if not compiler:
            raise SystemExit("nvcc was not found (set NVCC).")
        directory = pathlib.Path(args.cuda_objects_only)
        directory.mkdir(parents=True, exist_ok=True)
        for architecture in cuda_architectures():
            cuda_object(compiler, directory / f"local_relation_kernels_sm{architecture}.o",
                        [architecture], args.quiet)
        return 0
    try:
        info = build(args.output, parse_levels(args.levels), args.force, args.quiet)
    except RuntimeError as error:  # no TensorFlow here, e.g. under pip's build isolation
        print(f"keras-relnet: the kernels were not compiled: {error}", file=sys.stderr)
        return 1
    print(f"built {', '.join(info['libraries'])} for TensorFlow {info['tensorflow']} "
          f"in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
