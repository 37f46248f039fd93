# The two commands of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Azurite, Microsoft's Azure Storage emulator, which the az:// tests run against (an npm package).
AZURITE := $(VENV)/node/node_modules/.bin/azurite-blob

.PHONY: demo test install install-test bench-peers clean

$(BIN)/python:
	@echo "==> Creating a Python environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> Installing driftdeck and its libraries (Textual, scikit-learn, pandas, pyarrow, …) into $(VENV)"
	@echo "    The first run takes about a minute; later runs skip this step. $(NEXT_STEP)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "==> Installing driftdeck with its test tools into $(VENV) (first run: a minute or two)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test $(AZURITE)

# Without npm the suite still runs; the az:// tests then fail, each saying Azurite is missing.
$(AZURITE): | $(BIN)/python
	@if command -v npm >/dev/null; then \
		echo "==> Installing Azurite (the Azure Storage emulator the az:// tests use) into $(VENV)/node"; \
		npm install --silent --no-audit --no-fund --prefix $(VENV)/node azurite@3; \
	else \
		echo "==> npm not found: the az:// tests need Azurite (install Node.js 18+ with npm, then make install-test)"; \
	fi

demo: NEXT_STEP = The monitor opens next.
demo: install
	@echo "==> Opening the monitor: a sample season of batch files is replayed into a temporary folder."
	@echo "    Press ? for the keys and q to quit; the folder is removed on exit (keep it with: $(BIN)/driftdeck demo --keep)."
	@$(BIN)/driftdeck demo

test: install-test
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# NannyML, Evidently (needs pandas < 3) and river for bench/alarm_bench.py, kept out of driftdeck's own environment.
bench-peers:
	$(PYTHON) -m venv bench/.peers-venv
	bench/.peers-venv/bin/python -m pip install --quiet "evidently>=0.7,<0.8" nannyml river "pandas<3" pyarrow

clean:
	rm -rf $(VENV) .pytest_cache
