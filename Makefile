# Each target creates .venv at the repo root when missing and installs the
# pinned stack (requirements.txt + constraints.txt) and the package, editable,
# and builds the custom local relation kernels (g++, and nvcc when present).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo demo-spread track test test-packaging test-slow bench install ops wheel cuda-harness cuda-emulation clean

demo: $(INSTALLED)
	$(PY) examples/train_digits.py

# The demo over seeds 0-9 on every kernel CPU level and on the reference path
# (docs/benchmarks.md, "The demo"; about 90 s a run, resumable).
demo-spread: $(INSTALLED)
	$(PY) benchmarks/demo_spread.py

# The tracking example: train the spatial-temporal similarity on generated
# sequences, compare with IoU and Kalman + IoU trackers, export, draw.
track: $(INSTALLED)
	$(PY) examples/track_generated.py --output-dir runs/tracking

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not packaging"

# The wheel, installed elsewhere, and the build on first use (CI runs it after `make test`).
test-packaging: $(INSTALLED)
	$(PY) -m pytest -m packaging

test-slow: $(INSTALLED)
	$(PY) -m pytest -m slow

bench: $(INSTALLED)
	$(PY) benchmarks/local_relation.py
	$(PY) benchmarks/context_blocks.py
	$(PY) benchmarks/object_relation.py
	$(PY) benchmarks/export.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/kernel_levels.py
	$(PY) benchmarks/tracking.py

install: $(INSTALLED)

# Rebuilds the kernels for this CPU's level (`builder.py --force`); install builds
# them when stale. `make wheel`: a wheel with every portable level in dist/.
BUILDER := keras_relnet/ops/local_relation/builder.py
ops: $(INSTALLED)
	$(PY) $(BUILDER) --force

wheel: $(INSTALLED)
	$(PY) -m pip wheel --no-deps --no-build-isolation --wheel-dir dist .

# The TensorFlow-free CUDA test harness (run it on any GPU machine: build/cuda_harness,
# or custom_ops/harness/gpu_check.sh for the whole GPU check; its CPU
# reference is built without the machine-specific LOCAL_CXX_FLAGS, so the binary travels).
HARNESS := custom_ops/harness
KERNELS := keras_relnet/ops/local_relation/csrc
# Flags from $(KERNELS)/build_flags.bzl, the one definition the op library and Bazel use too.
FLAGS_OF = $(shell $(PYTHON) $(BUILDER) --print-flags $(1))
KERNEL_SOURCES := $(wildcard $(KERNELS)/*.h $(KERNELS)/*.cu \
                    $(HARNESS)/*.h $(HARNESS)/*.cc $(HARNESS)/*.cu)
cuda-harness: build/cuda_harness
build/cuda_harness: $(KERNEL_SOURCES) $(KERNELS)/build_flags.bzl
	mkdir -p build
	g++ $(call FLAGS_OF,CXX_FLAGS) -I$(KERNELS) \
	    -c $(HARNESS)/cpu_reference.cc -o build/cpu_reference.o
	nvcc $(call FLAGS_OF,NVCC_FLAGS) $(call FLAGS_OF,GENCODE) \
	    -I$(KERNELS) $(HARNESS)/local_relation_harness.cu \
	    $(KERNELS)/local_relation_kernels.cu build/cpu_reference.o -o $@

# The same harness and CUDA kernel source compiled by g++ for the CPU
# ($(HARNESS)/cuda_emulation.h), so the kernels' logic is checked without a GPU:
# build/cuda_emulation --cases N (needs the CUDA headers, not a GPU).
CUDA_HOME ?= /usr/local/cuda
cuda-emulation: build/cuda_emulation
build/cuda_emulation: $(KERNEL_SOURCES) $(KERNELS)/build_flags.bzl
	mkdir -p build
	g++ $(call FLAGS_OF,CXX_FLAGS) -I$(KERNELS) \
	    -c $(HARNESS)/cpu_reference.cc -o build/cpu_reference_emulation.o
	g++ $(call FLAGS_OF,CXX_FLAGS) -DKERAS_RELNET_CUDA_EMULATION -I$(KERNELS) -Icustom_ops -I$(CUDA_HOME)/include \
	    -x c++ $(HARNESS)/local_relation_harness.cu $(KERNELS)/local_relation_kernels.cu \
	    -x none build/cpu_reference_emulation.o -o $@

$(INSTALLED): setup.py requirements.txt constraints.txt $(BUILDER) $(wildcard $(KERNELS)/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) $(BUILDER)
	touch $(INSTALLED)

clean:
	rm -rf $(VENV) build dist *.egg-info keras_relnet/ops/local_relation/_local_relation_ops.*
