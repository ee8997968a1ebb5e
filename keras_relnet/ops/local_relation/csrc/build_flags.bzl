# The one definition of how the local relation kernels compile. Read by
# keras_relnet/ops/local_relation/builder.py (the package install, a wheel,
# the build on first use, `keras-relnet build-kernels`), by the Makefile's
# harness targets (`builder.py --print-flags`) and by Bazel (BUILD beside this).
# Plain assignments of strings, lists and dicts only: Starlark and Python both read it.

# Every C++ compile of the kernels (the TF op library, the harness's CPU reference).
# -fno-trapping-math lets GCC vectorise the kernels' polynomial exp (floor, float->int).
CXX_FLAGS = ["-std=c++17", "-O3", "-fno-trapping-math", "-Wno-deprecated-declarations"]

# The instruction-set levels of the CPU kernel: a library per level, and the
# loader picks the best one the CPU runs. On x86-64 the levels are the psABI
# microarchitecture levels (baseline SSE2; v3: AVX2, FMA, BMI; v4: AVX-512
# F/BW/CD/DQ/VL); elsewhere only "baseline" is built. Best last.
CPU_LEVELS = {
    "baseline": [],
    "x86-64-v3": ["-march=x86-64-v3"],
    "x86-64-v4": ["-march=x86-64-v4"],
}

# The "native" level: tuned for the machine that compiles it. Built only on
# request (`keras-relnet build-kernels --level native`, the level benchmark,
# Bazel); never part of a wheel.
LOCAL_CXX_FLAGS = ["-march=native"]

# Every nvcc compile of the CUDA kernels, and the GPU architectures they target
# (override with KERAS_RELNET_CUDA_ARCHS, e.g. "80,90,100").
NVCC_FLAGS = ["-std=c++17", "-O3"]
CUDA_ARCHS = ["80", "90"]
