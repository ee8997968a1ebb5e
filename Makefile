# Each target creates .venv at the repo root when missing and installs the
# pinned stack (requirements.txt + constraints.txt) and the package, editable.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean

demo: $(INSTALLED)
	$(PY) examples/train_digits.py

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow"

test-slow: $(INSTALLED)
	$(PY) -m pytest -m slow

bench: $(INSTALLED)
	$(PY) benchmarks/local_relation.py
	$(PY) benchmarks/context_blocks.py
	$(PY) benchmarks/object_relation.py
	$(PY) benchmarks/export.py
	$(PY) benchmarks/input_pipeline.py

install: $(INSTALLED)

$(INSTALLED): setup.py requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(INSTALLED)

clean:
	rm -rf $(VENV) build *.egg-info
