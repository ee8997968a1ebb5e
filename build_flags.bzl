# The one definition of how the local relation kernels compile. Read by
# custom_ops/build.py (the package install and `make ops`), by the Makefile's
# harness targets (`custom_ops/build.py --print-flags`) and by Bazel (BUILD).
# Plain assignments of strings and lists only: Starlark and Python both read it.

# Every C++ compile of the kernels (the TF op library, the harness's CPU reference).
# -fno-trapping-math lets GCC vectorise the kernels' polynomial exp (floor, float->int).
CXX_FLAGS = ["-std=c++17", "-O3", "-fno-trapping-math", "-Wno-deprecated-declarations"]

# Added for a build on the machine that runs it (`make install`, `make ops`,
# Bazel); a wheel (or KERAS_RELNET_PORTABLE=1) leaves them out so it runs anywhere.
LOCAL_CXX_FLAGS = ["-march=native"]

# Every nvcc compile of the CUDA kernels, and the GPU architectures they target
# (override with KERAS_RELNET_CUDA_ARCHS, e.g. "80,90,100").
NVCC_FLAGS = ["-std=c++17", "-O3"]
CUDA_ARCHS = ["80", "90"]
