# Thin aliases of the README's commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench bench-targets bench-cifar bench-criteria clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/pipeline run

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: setup
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q; status=$$?; if [ $$status -eq 5 ]; then exit 0; fi; exit $$status

lint: setup
	$(BIN)/lint-imports

bench: bench-targets bench-cifar bench-criteria

bench-targets: setup
	$(BIN)/python bench/targets.py

bench-cifar: setup
	$(BIN)/python bench/cifar_scorers.py

bench-criteria: setup
	$(BIN)/python bench/criteria.py --vit

clean:
	rm -rf runs .pytest_cache
