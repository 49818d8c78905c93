# Set-up is automatic: the first target you run creates .venv and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUTPUT ?= runs/demo

.PHONY: demo test lint compile clean

$(BIN)/videoclf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/videoclf  ## run the whole pipeline offline on a synthetic dataset
	$(BIN)/videoclf demo --output $(DEMO_OUTPUT)

test: lint  ## lint, then run every test
	$(BIN)/python -m pytest

lint: $(BIN)/videoclf
	$(BIN)/ruff check .

compile: $(BIN)/videoclf  ## rewrite pipelines/video_classification.yaml
	$(BIN)/videoclf compile

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
