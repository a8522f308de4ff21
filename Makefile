# Thin aliases of the README's commands. `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench bench-targets bench-cifar bench-criteria bench-zoo bench-distill bench-latency bench-plan-worth engine docker-tensorrt docker-openvino docker-cpu edge clean

TARGET ?= tensorrt
PRECISION ?= fp16
IMAGE ?= structured-pruning-pipeline
# the most recent run that got as far as export (make engine builds on it)
LAST_RUN = $(shell ls -td runs/*/export 2>/dev/null | head -n 1 | xargs -r dirname)

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
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile.tensorrt docker/Dockerfile.openvino docker/Dockerfile.cpu

# Compile and profile TARGET (default tensorrt) for the last run, then rebuild its report.
engine: setup
	@test -n "$(LAST_RUN)" || { echo "Error: no run with an export stage under runs/; run 'make run' first" >&2; exit 2; }
	$(BIN)/pipeline compile $(LAST_RUN) --target $(TARGET)
	$(BIN)/pipeline profile $(LAST_RUN) --target $(TARGET)
	$(BIN)/pipeline report $(LAST_RUN)

docker-tensorrt docker-openvino docker-cpu: docker-%:
	docker build -f docker/Dockerfile.$* -t $(IMAGE):$* .

# Jetson-style device: TensorRT through trtexec (JetPack puts it in /usr/src/tensorrt/bin), FP16,
# exit 3 when the pruned engine is not really faster. EDGE_ARGS adds model, weights, data.
edge: setup
	PATH="$$PATH:/usr/src/tensorrt/bin" $(BIN)/pipeline run --target tensorrt --precision $(PRECISION) --strict $(EDGE_ARGS)

bench: bench-targets bench-cifar bench-criteria

bench-targets: setup
	$(BIN)/python bench/targets.py

bench-cifar: setup
	$(BIN)/python bench/cifar_scorers.py

bench-criteria: setup
	$(BIN)/python bench/criteria.py --vit

bench-zoo: setup
	$(BIN)/python bench/zoo.py

bench-distill: setup
	$(BIN)/python bench/distill.py

bench-latency: setup
	$(BIN)/python bench/latency.py

bench-plan-worth: setup
	$(BIN)/python bench/plan_worth.py

clean:
	rm -rf runs .pytest_cache
