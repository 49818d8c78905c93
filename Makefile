# Set-up is automatic: the first target you run creates .venv and installs the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUTPUT ?= runs/demo

# Container images: podman where it is installed, else docker. REGISTRY and TAG default to
# components/images.py's: localhost/videoclf, and the commit of this checkout.
ENGINE ?= $(shell command -v podman || command -v docker)
IMAGES ?= data trainer evaluator serving
TF_VERSION := 2.21.0
ifdef REGISTRY
export VIDEOCLF_REGISTRY := $(REGISTRY)
endif
ifdef TAG
export VIDEOCLF_TAG := $(TAG)
endif
image_name = $(shell $(PYTHON) -m components.images $(2) $(1))
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --annotation-style line

.PHONY: demo test lint compile images push lock clean

# uv settles .[dev] in seconds, where pip's resolver backtracks through old releases for minutes.
# --compile-bytecode writes the .pyc files at install, as pip does and uv does not by default:
# where PYTHONDONTWRITEBYTECODE is set, every process would otherwise compile TensorFlow's
# sources again (about 15 s of CPU each: a kfp.local task, a test's subprocess).
$(BIN)/videoclf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[dev]"
	touch $@

demo: $(BIN)/videoclf  ## run the whole pipeline offline on a synthetic dataset
	$(BIN)/videoclf demo --output $(DEMO_OUTPUT)

test: lint  ## lint, then run every test
	$(BIN)/python -m pytest

lint: $(BIN)/videoclf
	$(BIN)/ruff check .

compile: $(BIN)/videoclf  ## rewrite the reference YAMLs, pipelines/video_classification.yaml and batch_prediction.yaml
	$(BIN)/videoclf compile
	$(BIN)/videoclf batch --compile pipelines/batch_prediction.yaml

images: $(addprefix image-,$(IMAGES))  ## build the component images (REGISTRY, TAG)

image-%:
	$(ENGINE) build --file images/Dockerfile --build-arg IMAGE=$* --tag $(call image_name,$*,name) \
		--tag $(call image_name,$*,latest) .

push: images  ## push the images to REGISTRY and record their digests in images/digests.json
	$(foreach image,$(IMAGES),$(PYTHON) -m components.images push $(image) $(ENGINE) &&) true

lock: $(BIN)/videoclf  ## re-pin the images' dependencies (images/*/requirements.txt)
	echo "tensorflow==$(TF_VERSION)" >$(VENV)/tensorflow-version.txt
	$(LOCK) --extra data -o images/data/requirements.txt
	$(LOCK) --extra train --extra gpu -c $(VENV)/tensorflow-version.txt -o images/trainer/requirements.txt
	$(LOCK) --extra evaluate -c $(VENV)/tensorflow-version.txt -o images/evaluator/requirements.txt
	$(LOCK) --extra serve -c $(VENV)/tensorflow-version.txt -o images/serving/requirements.txt

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
