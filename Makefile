# seedrl: `make demo` and `make test` each set up the virtual environment first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed

.PHONY: demo test test-fast test-compat venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[test,lm,minari,hf,images,dmenv,play,atari,envpool,tensorboard,ray]"
	touch $(STAMP)

# The main job: IMPALA trains CartPole-v1 to the solved level on the embedded
# runtime (curves in runs/cartpole_impala/curves.png), after a tour of the data layer.
demo: $(STAMP)
	$(VENV)/bin/seedrl demo
	rm -rf runs/cartpole_impala
	$(VENV)/bin/seedrl run configs/cartpole_impala.yaml

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not compat and not serial"
	$(PY) -m pytest -q -m "serial and not compat"

$(COMPAT_STAMP): requirements-compat.txt pyproject.toml
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/pip install -q --upgrade pip
	$(COMPAT_VENV)/bin/pip install -q -r requirements-compat.txt
	$(COMPAT_VENV)/bin/pip install -q -e . --no-deps
	touch $(COMPAT_STAMP)

# Interop against the real tensorflow-datasets and rlds packages (pinned, ~1.8 GB).
test-compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -m pytest -q -m compat tests/compat

bench: $(STAMP)
	$(PY) benchmarks/data_store.py

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .hypothesis
