# The two commands of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test bench-peers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/driftdeck demo

test: install-test
	$(BIN)/python -m pytest -q

# NannyML, Evidently (needs pandas < 3) and river for bench/alarm_bench.py, kept out of driftdeck's own environment.
bench-peers:
	$(PYTHON) -m venv bench/.peers-venv
	bench/.peers-venv/bin/python -m pip install --quiet "evidently>=0.7,<0.8" nannyml river "pandas<3" pyarrow

clean:
	rm -rf $(VENV) .pytest_cache
