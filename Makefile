# One virtual environment for everything; the CPU build of PyTorch is installed before the project
# so that pip does not pull a multi-GB CUDA build (override TORCH for a GPU machine: TORCH=torch).
VENV   ?= .venv
PYTHON ?= python3
TORCH  ?= torch==2.13.0
# The container image every config in cluster/ runs (Dockerfile): build with `make image`, push with `make push`.
IMAGE  ?= ghcr.io/ray-dl-pipeline/dl-pipeline:0.1.0
PY      = $(VENV)/bin/python

.PHONY: install demo test test-unit lint docs bench clean image push

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/pipeline demo

test: install
	$(PY) -m pytest -q --durations=25  # the slowest tests, to keep CI time in view

test-unit: install
	$(PY) -m pytest -q tests/unit

lint: install
	$(PY) -m pip install -q ruff && $(PY) -m ruff check pipeline tests jobs benchmarks

docs: install  # README's command and configuration references, from the parser and the typed config
	PIPELINE_TASKS= $(PY) -m pipeline.reference README.md

bench: install  # every benchmark, one at a time, then benchmarks/RESULTS.md rewritten (about 20 minutes on 2 cores)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run_all.py

clean:
	rm -rf runs .pytest_cache

image:
	docker build -t $(IMAGE) .

push: image
	docker push $(IMAGE)
